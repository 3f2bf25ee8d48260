"""End to end: a labelled anomaly (the synthetic fixture entity's spike, tests/fixture_data.py) replayed through a
real daemon reaches a real Alertmanager through the bridge, with the labels and annotations the person paged needs,
and disappears when the daemon resolves it."""

from __future__ import annotations

import re

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import TINY_ENTITY, wait_until
from tests.fixture_data import anomaly, replay_slice, split_rows
from tests.integration.helpers import DaemonProcess, read_topic, record

from .helpers import Alertmanager, BridgeProcess, Webhook

pytestmark = [pytest.mark.kafka]

FIRST_ROW, LAST_ROW = replay_slice(300, lead=170)
SPLIT_ROW = anomaly()[1] + 5
# The replay stops just after the anomaly until the firing notification arrived (Alertmanager notifies a resolved
# alert only after its firing one; the daemon's cooldown of 60 quiet rows keeps it open), then sends the quiet rows
# after it, which resolve the alert.


def replay(bootstrap: str, topic: str, rows, first_row: int) -> None:
    producer = Producer(load_config(None, ["kafka.partitions=2"]).kafka.at(bootstrap))
    for i, values in enumerate(rows):
        producer.produce(topic, TINY_ENTITY.encode(), record(TINY_ENTITY, first_row + i, values))
    producer.flush()
    producer.close()


def test_a_replayed_anomaly_fires_in_alertmanager_and_resolves(broker, tiny_bundle, names, tmp_path):
    cfg = load_config(None, ["kafka.partitions=2"])
    ensure_topics(cfg.kafka.at(broker.bootstrap), [names["metrics"], names["alerts"], names["dlq"]])
    hook = Webhook()
    am = Alertmanager(tmp_path, hook.url)
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log",
                           extra=("scoring.stride=1", "alerting.min_consecutive=1", "alerting.cooldown=60"))
    bridge = BridgeProcess(broker.bootstrap, names, [am.url], tmp_path / "bridge.log")
    try:
        daemon.wait_ready()
        rows = split_rows(FIRST_ROW, LAST_ROW)
        replay(broker.bootstrap, names["metrics"], rows[: SPLIT_ROW - FIRST_ROW], FIRST_ROW)
        firing = read_topic(broker.bootstrap, names["alerts"], lambda m: m, 60)[0]
        assert firing["status"] == "firing"
        wait_until(lambda: hook.alerts("firing"), 30, "the firing notification at the webhook")
        assert [a["labels"]["alert_id"] for a in am.alerts()] == [firing["alert_id"]]
        notified = hook.alerts("firing")[0]
        assert notified["labels"] == {"alertname": "StreamdetAnomaly", "entity": TINY_ENTITY, "model": "lstm_ae",
                                      "severity": notified["labels"]["severity"], "alert_id": firing["alert_id"],
                                      "team": "sre"}
        assert notified["labels"]["severity"] in ("critical", "warning", "info")
        notes = notified["annotations"]
        channel = firing["top_channels"][0]
        assert notes["summary"].startswith(f"{TINY_ENTITY}: anomaly score ")
        assert re.search(r"is \d+\.\dx its threshold", notes["summary"])
        assert "since 2023-11-14 " in notes["summary"]  # the episode's first over-threshold row, in UTC
        assert f"{channel['name']} {channel['share'] * 100:.0f} %" in notes["top_channels"]
        assert float(notes["score"]) == pytest.approx(firing["score"], rel=1e-5)
        assert notified["generatorURL"] == f"http://grafana/d/sd?var-entity={TINY_ENTITY}"

        replay(broker.bootstrap, names["metrics"], rows[SPLIT_ROW - FIRST_ROW:], SPLIT_ROW)
        events = read_topic(broker.bootstrap, names["alerts"], lambda m: any(e["status"] == "resolved" for e in m),
                            60)
        wait_until(lambda: hook.alerts("resolved"), 30, "the resolved notification at the webhook")
        wait_until(lambda: am.alerts() == [], 30, "the alert to leave Alertmanager's active alerts")
        assert {a["labels"]["alert_id"] for a in hook.alerts()} == {e["alert_id"] for e in events}
    finally:
        bridge.close()
        daemon.close()
        am.stop()
        hook.close()
