"""Rebalance drain without checkpoints: a second instance joins between two phases of a stream; the first scores the
partial windows of the partitions it loses, publishes, flushes and commits them before letting go, so across both
instances every record is consumed once and scored once, and each entity's Prometheus series is exported by its
owner only (the checkpoint variant lives in tests/reliability)."""

from __future__ import annotations

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from tests.conftest import wait_until
from tests.fixture_data import split_rows
from streamdet.io.producer import Producer
from tests.integration.helpers import DaemonProcess, final_totals, record

pytestmark = pytest.mark.kafka

ENTITIES = ("rig-a", "rig-b", "rig-c", "rig-d")  # keys over two partitions
ROWS = 300  # per entity
SPLIT = 155  # rows sent before the second instance joins: not a multiple of the stride, so windows are partial


def _produce(bootstrap: str, topic: str, rows, first_row: int) -> None:
    """Rows first_row.. of every entity, keyed by entity, with ts = T0 + row (continuing across the two phases)."""
    producer = Producer(load_config(None, ["kafka.partitions=2"]).kafka.at(bootstrap))
    for i, values in enumerate(rows, start=first_row):
        for entity in ENTITIES:
            producer.produce(topic, entity.encode(), record(entity, i, values))
    producer.flush()
    producer.close()


def _scored_entities(daemon: DaemonProcess) -> set[str]:
    """Entities whose per-entity score series the instance exports."""
    return {dict(labels)["entity"] for name, labels in daemon.samples() if name == "streamdet_entity_score"}


def test_second_instance_joins_and_revoked_partitions_are_drained_not_rescored(broker, tiny_bundle,
                                                                                client_names, tmp_path):
    rows = split_rows(0, ROWS)
    total = ROWS * len(ENTITIES)
    ensure_topics(load_config(None, ["kafka.partitions=2"]).kafka.at(broker.bootstrap), [client_names["metrics"]])
    no_state = ("kafka.state_topic=''",)
    first = DaemonProcess(tiny_bundle, broker.bootstrap, client_names, tmp_path / "first.log", extra=no_state)
    second = None
    try:
        first.wait_ready()
        _produce(broker.bootstrap, client_names["metrics"], rows[:SPLIT], 0)
        wait_until(lambda: first.value("streamdet_records_consumed_total", topic=client_names["metrics"])
                   >= SPLIT * len(ENTITIES), 30, "the first instance to read the first phase")
        second = DaemonProcess(tiny_bundle, broker.bootstrap, client_names, tmp_path / "second.log", extra=no_state)
        second.wait_ready(60)  # ready = partitions assigned: the group has rebalanced onto both
        wait_until(lambda: first.value("streamdet_ready") == 1.0, 30, "the first instance to get its share back")
        _produce(broker.bootstrap, client_names["metrics"], rows[SPLIT:], SPLIT)

        def consumed_everything() -> bool:
            return sum(d.value("streamdet_records_consumed_total", topic=client_names["metrics"])
                       for d in (first, second)) >= total

        wait_until(consumed_everything, 30, f"the two instances to consume all {total} records")
        wait_until(lambda: _scored_entities(first) | _scored_entities(second) == set(ENTITIES), 30,
                   "every entity's score series to be exported")
        # each entity's series on exactly one instance: the one that owns it now (none left behind by a revoke)
        assert not _scored_entities(first) & _scored_entities(second), (_scored_entities(first),
                                                                         _scored_entities(second))
        codes = [d.terminate(20)[0] for d in (first, second)]
        assert codes == [0, 0], codes
        one, two = final_totals(first), final_totals(second)
        assert one is not None and two is not None
        assert one["consumed"] + two["consumed"] == total, (one, two)  # nothing redelivered at the hand-over
        assert one["scored"] + two["scored"] == total, (one, two)  # drained, not left unscored or scored twice
        assert one["pending_in_checkpoint"] == two["pending_in_checkpoint"] == 0
        assert one["scored"] >= SPLIT * len(ENTITIES)  # the revoke (eager: everything) drained the partial windows
        assert "partitions revoked" in first.log_text()
        assert two["consumed"] > 0, "the second instance was never given a partition"
    finally:
        first.close()
        if second is not None:
            second.close()
