"""The daemon end to end: real broker, `streamdet run` in a subprocess, a real SMD anomaly, an independent reader.

One daemon run (module fixture) serves the alert, dead-letter and metrics tests: 460 test rows of machine-1-2 around
its labelled anomaly at rows 4629-4687, with four malformed records injected after the first 100 rows.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from streamdet.config import load_config
from streamdet.io.kafka import ensure_topics, make_producer
from tests.conftest import TINY_ENTITY, wait_until
from tests.integration.helpers import T0, DaemonProcess, read_topic, record, smd_labels, smd_rows

pytestmark = pytest.mark.kafka

FIRST_ROW, LAST_ROW = 4300, 4760  # the test-split slice replayed; the anomaly starts 329 rows in
SLACK = 3  # an alert may start this many points before or after the labelled segment
C = 38
MALFORMED = {
    "not_json": b"this is not json",
    "no_entity": orjson.dumps({"ts": T0, "values": [0.0] * C}),
    "wrong_width": orjson.dumps({"entity": TINY_ENTITY, "ts": T0 + FIRST_ROW + 100, "values": [0.1] * 5}),
    "non_finite": (f'{{"entity":"{TINY_ENTITY}","ts":{T0 + FIRST_ROW + 100},"values":[1e39'
                   + ",0.0" * (C - 1) + "]}").encode(),
}


@pytest.fixture(scope="module")
def scenario(broker, tiny_bundle, smd_root, tmp_path_factory):
    """Start the daemon, replay the slice (malformed records included), wait until every good record is scored."""
    tag = uuid.uuid4().hex[:8]
    names = {"metrics": f"metrics-{tag}", "alerts": f"alerts-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}"}
    rows = smd_rows(smd_root, TINY_ENTITY, "test", FIRST_ROW, LAST_ROW)
    labels = smd_labels(smd_root, TINY_ENTITY, FIRST_ROW, LAST_ROW)
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path_factory.mktemp("e2e") / "daemon.log")
    try:
        daemon.wait_ready()
        _replay(broker.bootstrap, names["metrics"], rows)
        n_good = len(rows)
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= n_good + len(MALFORMED), 30, "the daemon to consume every record")
        wait_until(lambda: daemon.value("streamdet_records_scored_total") >= n_good - 10, 30,
                   "every full stride to be scored")
        yield {"daemon": daemon, "names": names, "labels": labels, "n_good": n_good,
               "bootstrap": broker.bootstrap}
    finally:
        daemon.close()


def _replay(bootstrap: str, topic: str, rows) -> None:
    """Produce the rows keyed by entity (payload ts = T0 + dataset row), malformed records after 100 rows."""
    cfg = load_config(None, ["kafka.partitions=2"])
    ensure_topics(cfg, [topic], bootstrap)
    producer = make_producer(cfg, bootstrap)
    for i, values in enumerate(rows):
        if i == 100:
            for raw in MALFORMED.values():
                producer.produce(topic, b"bad-records", raw)
        producer.produce(topic, TINY_ENTITY.encode(), record(TINY_ENTITY, FIRST_ROW + i, values))
    producer.flush()
    producer.close()


def test_an_alert_fires_at_the_labelled_anomaly(scenario):
    labels = scenario["labels"]
    start = FIRST_ROW + int(labels.argmax())
    end = FIRST_ROW + len(labels) - int(labels[::-1].argmax())  # exclusive
    assert labels[start - FIRST_ROW] == 1 and labels[end - 1 - FIRST_ROW] == 1

    def hit(alerts: list[dict]) -> bool:
        return any(a["status"] == "firing" and start - SLACK <= a["start_ts"] - T0 <= end + SLACK for a in alerts)

    alerts = read_topic(scenario["bootstrap"], scenario["names"]["alerts"], hit, 30)
    firing = [a for a in alerts if a["status"] == "firing"]
    assert all(a["_key"] == TINY_ENTITY.encode() and a["entity"] == TINY_ENTITY for a in alerts)
    first = next(a for a in firing if start - SLACK <= a["start_ts"] - T0 <= end + SLACK)
    assert first["score"] > first["threshold"] and first["model"]["name"] == "lstm_ae"
    assert first["top_channels"] and first["source"]["topic"] == scenario["names"]["metrics"]


def test_malformed_records_reach_the_dead_letter_topic_with_their_reason(scenario):
    letters = read_topic(scenario["bootstrap"], scenario["names"]["dlq"], lambda m: len(m) >= len(MALFORMED), 30)
    by_reason = {m["reason"]: m for m in letters}
    assert set(by_reason) == set(MALFORMED)
    assert by_reason["not_json"]["payload"] == "this is not json"
    assert by_reason["wrong_width"]["detail"].startswith("values: 5 entries")
    offsets = sorted(m["source"]["offset"] for m in letters)
    assert len(set(offsets)) == len(MALFORMED) and all(m["source"]["topic"] == scenario["names"]["metrics"]
                                                      for m in letters)
    daemon = scenario["daemon"]
    for reason in MALFORMED:
        assert daemon.value("streamdet_records_rejected_total", reason=reason) == 1
    # the loop kept scoring: every good record after the bad ones got its score
    assert daemon.value("streamdet_records_scored_total") >= scenario["n_good"] - 10


def test_metrics_endpoint_serves_the_documented_series(scenario):
    from tests.integration.test_io_adapters import DOCUMENTED_SERIES, declared_series

    daemon = scenario["daemon"]
    status, text = daemon.get("/metrics")
    assert status == 200
    missing = [name for name in DOCUMENTED_SERIES if name not in declared_series(text)]
    assert not missing, f"not exported: {missing}"
    assert daemon.get("/healthz")[0] == 200 and daemon.get("/readyz")[0] == 200
    samples = daemon.samples()
    assert samples[("streamdet_entity_score", (("entity", TINY_ENTITY),))] >= 0
    assert samples[("streamdet_ready", ())] == 1.0
    assert samples[("streamdet_entities_active", ())] == 1.0
    assert samples[("streamdet_batch_size_count", ())] >= 1
    assert samples[("streamdet_commits_total", ())] >= 1
    assert any(name == "streamdet_consumer_lag" for name, _ in samples)
