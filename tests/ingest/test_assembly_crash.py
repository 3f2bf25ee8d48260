"""kill -9 while rows are being assembled, on the real broker: the restarted daemon (same group, checkpoints on)
publishes every alert an uninterrupted run on the same rows publishes, with the same ids; nothing is dead-lettered."""

from __future__ import annotations

import threading

import pytest

from streamdet.bundle import load_bundle

from tests.conftest import wait_until
from tests.reliability.helpers import (alert_key, alert_mismatches, kill_hard, produce, published_alerts,
                                       reference_alerts, scenario_records, start_daemon)

from .samples import SAMPLE_EXTRA, sample_messages

pytestmark = pytest.mark.kafka


def test_kill_9_during_assembly_loses_no_alert(broker, tiny_bundle, client_names, tmp_path):
    want = reference_alerts(tiny_bundle, scenario_records())
    assert any(status == "firing" for _, status in want), "the scenario must contain an anomaly"
    messages = sample_messages(load_bundle(tiny_bundle).channels)  # one per channel, row and entity: most polls end inside a row
    first = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "first.log", *SAMPLE_EXTRA)
    second = None
    try:
        first.wait_ready()
        # paced so that the stream lasts about 5 s: the kill lands mid-stream, after a few commits (commits happen
        # only while offsets move, so a stream consumed in one go would never reach three)
        sender = threading.Thread(target=produce, args=(broker.bootstrap, client_names["metrics"], messages,
                                                        2_000.0))
        sender.start()
        wait_until(lambda: first.value("streamdet_commits_total") >= 3
                   and first.value("streamdet_records_scored_total") >= 300, 60, "commits and scores")
        kill_hard(first)
        sender.join(60)
        second = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "second.log", *SAMPLE_EXTRA)
        second.wait_ready()
        got = published_alerts(broker.bootstrap, client_names["alerts"], want, 60)
        assert not alert_mismatches(want, got), alert_mismatches(want, got)  # duplicates (same id, status) allowed
        assert {alert_key(m) for m in got} == want.keys()
        rejected = {name: v for (name, labels), v in second.samples().items()
                    if name == "streamdet_records_rejected_total" and v}
        assert rejected == {}, rejected  # no sample late, out of its partition or in a row left incomplete
    finally:
        first.close()
        if second is not None:
            second.close()
