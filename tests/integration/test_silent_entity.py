"""A host that falls silent while its alert is open: the daemon resolves the alert at its last record once
alerting.resolve_idle_s has passed on its clock, so the alert does not stay open on the topic (and in Alertmanager,
through the bridge's resends) for ever."""

from __future__ import annotations

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import wait_until
from tests.fixture_data import replay_slice, split_rows
from tests.integration.helpers import T0, DaemonProcess, read_topic, record

pytestmark = pytest.mark.kafka

ENTITY = "host-going-dark"
IDLE_S = 2.0
FIRST_ROW, LAST_ROW = replay_slice(400, lead=170)  # the fixture's labelled anomaly starts 170 rows in


def test_an_alert_left_open_by_a_host_that_went_silent_resolves_at_its_last_record(broker, tiny_bundle, names,
                                                                                      tmp_path):
    kafka = load_config(None, ["kafka.partitions=2"]).kafka.at(broker.bootstrap)
    ensure_topics(kafka, [names["metrics"]])
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log",
                           extra=("alerting.min_consecutive=1", f"alerting.resolve_idle_s={IDLE_S}",
                                  "kafka.state_topic=''"))
    producer = Producer(kafka)
    try:
        daemon.wait_ready()
        rows = split_rows(FIRST_ROW, LAST_ROW)
        sent = 0
        # one record at a time, each scored before the next (light load: scored on arrival), until the alert fires:
        # the host then sends nothing more, so no point under the threshold can resolve it
        while daemon.value("streamdet_alerts_total", status="firing") < 1:
            assert sent < len(rows), "the replayed anomaly never fired"
            producer.produce(names["metrics"], ENTITY.encode(), record(ENTITY, FIRST_ROW + sent, rows[sent]))
            producer.flush()
            sent += 1
            wait_until(lambda: daemon.value("streamdet_records_scored_total") >= sent, 30, f"record {sent} scored")
        assert daemon.value("streamdet_alerts_total", status="resolved") == 0

        def firing_and_resolved(messages: list[dict]) -> bool:
            return {m["status"] for m in messages} >= {"firing", "resolved"}

        alerts = read_topic(broker.bootstrap, names["alerts"], firing_and_resolved, 30)
        firing = [m for m in alerts if m["status"] == "firing"]
        resolved = [m for m in alerts if m["status"] == "resolved"]
        assert len(firing) == 1 and len(resolved) == 1, alerts
        assert resolved[0]["alert_id"] == firing[0]["alert_id"]
        # the alert fired on the host's last record, and resolves there: that record's time and source
        assert (resolved[0]["ts"], resolved[0]["source"]) == (T0 + FIRST_ROW + sent - 1, firing[0]["source"])
        assert resolved[0]["score"] >= firing[0]["score"]  # the episode's peak
    finally:
        producer.close()
        daemon.close()

