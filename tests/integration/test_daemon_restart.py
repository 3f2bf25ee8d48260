"""SIGTERM during a replay: the daemon exits 0 quickly; a restart with the same group resumes exactly there.

Two modes: without a state topic the daemon drains (scores) its partial windows before committing; with one, the
partial windows travel in the checkpoint and the restarted daemon scores them, skipping the redelivered records
its restored state already holds. Either way every record is scored exactly once.
"""

from __future__ import annotations

import threading
import time

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import wait_until
from tests.fixture_data import split_rows
from tests.integration.helpers import DaemonProcess, final_totals, record

pytestmark = pytest.mark.kafka

ENTITIES = ("rig-a", "rig-b", "rig-c")  # three keys spread over two partitions
ROWS = 400  # per entity
RATE = 600.0  # records per second in total
HELD_BACK = 1 / 3  # the last third of the replay waits until the first daemon has stopped (on a slow machine a
# paced replay alone could end before the SIGTERM, and the test would interrupt nothing)


def _paced_replay(bootstrap: str, topic: str, rows, release: threading.Event) -> None:
    cfg = load_config(None, ["kafka.partitions=2"])
    producer = Producer(cfg.kafka.at(bootstrap))
    started = time.monotonic()
    hold_at = int(len(rows) * (1 - HELD_BACK))
    for i in range(len(rows)):
        if i == hold_at:
            producer.flush()
            release.wait(60)
            started = time.monotonic() - i * len(ENTITIES) / RATE
        for j, entity in enumerate(ENTITIES):
            n = i * len(ENTITIES) + j
            ahead = started + n / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting on the system under test
            producer.produce(topic, entity.encode(), record(entity, i, rows[i]))
    producer.flush()
    producer.close()


@pytest.mark.parametrize("mode", ["drain", "checkpoint"])
def test_sigterm_and_a_restart_score_every_record_exactly_once(broker, tiny_bundle, client_names, tmp_path, mode):
    rows = split_rows(0, ROWS)
    total = ROWS * len(ENTITIES)
    ensure_topics(load_config(None, ["kafka.partitions=2"]).kafka.at(broker.bootstrap), [client_names["metrics"]])
    state = ("kafka.state_topic=''",) if mode == "drain" else (f"kafka.state_topic=state-{client_names['group']}",)
    first = DaemonProcess(tiny_bundle, broker.bootstrap, client_names, tmp_path / "first.log", extra=state)
    second = None
    try:
        first.wait_ready()
        release = threading.Event()
        sender = threading.Thread(target=_paced_replay, args=(broker.bootstrap, client_names["metrics"], rows, release))
        sender.start()
        wait_until(lambda: first.value("streamdet_records_scored_total") >= 200, 60, "the first scores")
        code, seconds = first.terminate()
        assert sender.is_alive(), "the replay ended before SIGTERM: the test did not interrupt anything"
        release.set()
        assert code == 0 and seconds < 5.0, (code, seconds, first.log_text()[-2000:])
        done_first = final_totals(first)
        assert done_first is not None and done_first["consumed"] < total
        assert done_first["scored"] + done_first["pending_in_checkpoint"] == done_first["consumed"]
        if mode == "drain":
            assert done_first["pending_in_checkpoint"] == 0
        sender.join(30)

        second = DaemonProcess(tiny_bundle, broker.bootstrap, client_names, tmp_path / "second.log", extra=state)
        second.wait_ready()
        remaining = total - done_first["consumed"]
        wait_until(lambda: second.value("streamdet_records_consumed_total", topic=client_names["metrics"]) >= remaining,
                   60, f"the second daemon to consume the remaining {remaining} records")
        code, _ = second.terminate()
        done_second = final_totals(second)
        assert code == 0 and done_second is not None
        # exactly once each across the restart: none scored twice, none skipped
        assert done_second["consumed"] - done_second["skipped_restored"] == remaining
        assert done_first["scored"] + done_second["scored"] + done_second["pending_in_checkpoint"] == total
    finally:
        first.close()
        if second is not None:
            second.close()
