"""An entity dropped at input.max_entities leaves the daemon for good: its per-entity series disappear, the drop is
counted, and its checkpoint is erased from the state changelog, so a restarted daemon does not bring it back."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.fixture_data import split_rows
from tests.integration.helpers import record
from tests.reliability.helpers import produce, start_daemon

pytestmark = pytest.mark.kafka

ROWS = 60  # per entity: past the tiny model's 32-row window, so each entity has warm state to checkpoint
CAP = ("input.max_entities=2", "input.entity_idle_s=0")  # the least recently used entity goes for a newcomer


def _records(entities: tuple[str, ...], rows) -> list[tuple[str, bytes]]:
    return [(entity, record(entity, i, values)) for i, values in enumerate(rows) for entity in entities]


def _exported(daemon) -> set[str]:
    return {dict(labels)["entity"] for name, labels in daemon.samples() if name == "streamdet_entity_score"}


def test_an_entity_evicted_at_the_cap_is_not_restored_after_a_restart(broker, tiny_bundle, names, tmp_path):
    rows = split_rows(0, ROWS)
    daemon = start_daemon(tiny_bundle, broker.bootstrap, names, tmp_path / "first.log", *CAP)
    restarted = None
    try:
        daemon.wait_ready()
        produce(broker.bootstrap, names["metrics"], _records(("a", "b"), rows))
        wait_until(lambda: _exported(daemon) == {"a", "b"} and
                   daemon.value("streamdet_state_records_total", kind="snapshot") >= 2, 30,
                   "both entities scored and checkpointed")  # so the one evicted next has a checkpoint to erase
        produce(broker.bootstrap, names["metrics"], _records(("new",), rows))  # one of a, b must make room
        wait_until(lambda: daemon.value("streamdet_entities_evicted_total") >= 1 and "new" in _exported(daemon), 30,
                   "an eviction and the first scores of 'new'")
        exported = _exported(daemon)
        assert len(exported) == 2 and "new" in exported, exported  # no stale series of the evicted one left
        assert daemon.value("streamdet_entities_evicted_total") == 1
        assert daemon.value("streamdet_state_records_total", kind="tombstone") > 0
        code, _ = daemon.terminate(20)  # a clean stop: its last commit round flushes the tombstones
        assert code == 0
        restarted = start_daemon(tiny_bundle, broker.bootstrap, names, tmp_path / "second.log", *CAP)
        restarted.wait_ready(60)
        wait_until(lambda: "restored" in restarted.log_text(), 30, "the restart's restore")
        assert "restored 2 entities" in restarted.log_text()  # "new" and the one kept; the evicted one stays gone
    finally:
        daemon.close()
        if restarted is not None:
            restarted.close()
