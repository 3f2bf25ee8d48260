"""kill -9 mid-stream, and scale-out/in of a consumer group: no alert lost, ids stable, every record scored."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import wait_until

from .helpers import (alert_key, alert_mismatches, killed_mid_stream, produce, published_alerts,
                      reference_alerts, scenario_records, start_daemon)

pytestmark = pytest.mark.kafka


def test_kill_9_then_restart_loses_no_alert_and_keeps_ids(broker, tiny_bundle, client_names, tmp_path):
    records = scenario_records()
    want = reference_alerts(tiny_bundle, records)
    assert any(status == "firing" for _, status in want), "the scenario must contain an anomaly"
    before_kill: dict = {}

    def note_scored(first):
        before_kill["scored"] = first.value("streamdet_records_scored_total")

    with killed_mid_stream(tiny_bundle, broker.bootstrap, client_names, records, tmp_path, note_scored) as second:
        messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 45)
        # none lost, none different; duplicates (same id and status) are allowed
        assert not alert_mismatches(want, messages), alert_mismatches(want, messages)
        redelivered = len(messages) - len({alert_key(m) for m in messages})
        rescored = before_kill["scored"] + second.value("streamdet_records_scored_total") - len(records)
        # bounded by what one commit interval (200 ms at 700 records/s) plus a scrape interval can hold
        assert rescored <= 400, (rescored, redelivered)


def test_second_instance_joins_then_first_leaves_every_record_scored_once(broker, tiny_bundle, client_names,
                                                                         tmp_path):
    records = scenario_records()
    want = reference_alerts(tiny_bundle, records)
    resume, hold_at = threading.Event(), 2 * len(records) // 3
    first = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "first.log")
    second = None
    try:
        first.wait_ready()
        # the stream flows while the second instance joins; its last third waits until the first has left, so
        # that records arrive before, (usually) during and always after the hand-over, however slow the start-up
        sender = threading.Thread(target=produce, args=(broker.bootstrap, client_names["metrics"], records, 120.0),
                                  kwargs={"hold_at": hold_at, "resume": resume})
        sender.start()
        wait_until(lambda: first.value("streamdet_records_scored_total") >= 120, 30, "the first scores")
        second = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "second.log")
        second.wait_ready(60)
        code, _ = first.terminate(20)
        assert code == 0
        resume.set()
        sender.join(30)
        messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 45)
        assert not alert_mismatches(want, messages), alert_mismatches(want, messages)

        def caught_up():
            lags = [v for (name, _), v in second.samples().items() if name == "streamdet_consumer_lag"]
            return len(lags) == 2 and sum(lags) == 0

        wait_until(caught_up, 30, "the second instance to reach the end of both partitions")
        code, _ = second.terminate(20)
        assert code == 0
        from tests.integration.helpers import final_totals

        one, two = final_totals(first), final_totals(second)
        scored = one["scored"] + two["scored"] + two["pending_in_checkpoint"]
        assert scored == len(records), (one, two)  # exactly once across the hand-over
        assert two["consumed"] - two["skipped_restored"] >= len(records) - hold_at  # the held third: the second's
    finally:
        resume.set()
        first.close()
        if second is not None:
            second.close()
