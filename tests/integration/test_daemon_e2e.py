"""The daemon end to end: real broker, `streamdet run` in a subprocess, a labelled anomaly, an independent reader.

One daemon run (module fixture) serves the alert, dead-letter, metrics, max-delay and shutdown tests: 465 test rows of
the synthetic fixture entity (tests/fixture_data.py) holding one labelled anomaly 170 rows in, with four malformed
records injected after the first 100 rows (same key, so same partition: their offsets are exactly 100-103 and every
good record after them must still be scored). 465 is not a multiple of the stride: the last records wait in a partial
stride until scoring.max_delay_s.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import KAFKA_CLIENTS, SMD_CONFIG, TINY_CHANNELS, TINY_ENTITY, TINY_WINDOW, wait_until
from tests.fixture_data import anomaly, replay_slice, split_labels, split_rows
from tests.integration.helpers import T0, DaemonProcess, final_totals, read_topic, record

pytestmark = pytest.mark.kafka

FIRST_ROW, LAST_ROW = replay_slice(465, lead=170)  # the test-split slice replayed; the anomaly starts 170 rows in
SLACK = 3  # an alert may start this many points before or after the labelled segment
BAD_AT = 100  # the malformed records go in after this many good ones
C = TINY_CHANNELS
STRIDE = load_config(SMD_CONFIG).scoring.stride  # a partial stride waits in the window until more records come...
MAX_DELAY_S = 3.0  # ...or until its oldest record has waited this long
MALFORMED = {
    "not_json": b"this is not json",
    "no_entity": orjson.dumps({"ts": T0, "values": [0.0] * C}),
    "wrong_width": orjson.dumps({"entity": TINY_ENTITY, "ts": T0 + FIRST_ROW + BAD_AT, "values": [0.1] * 5}),
    "non_finite": (f'{{"entity":"{TINY_ENTITY}","ts":{T0 + FIRST_ROW + BAD_AT},"values":[1e39'
                   + ",0.0" * (C - 1) + "]}").encode(),
}


@pytest.fixture(scope="module", params=KAFKA_CLIENTS)
def scenario(request, broker, tiny_bundle, tmp_path_factory):
    """Start the daemon (with each kafka.client), replay the slice (malformed records included), wait until every
    good record is scored."""
    tag = uuid.uuid4().hex[:8]
    names = {"metrics": f"metrics-{tag}", "alerts": f"alerts-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}",
             "client": request.param}
    rows = split_rows(FIRST_ROW, LAST_ROW)
    labels = split_labels(FIRST_ROW, LAST_ROW)
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path_factory.mktemp("e2e") / "daemon.log",
                           extra=(f"kafka.state_topic=state-{tag}", f"scoring.max_delay_s={MAX_DELAY_S}"))
    try:
        daemon.wait_ready()
        _replay(broker.bootstrap, names["metrics"], rows)
        n_good = len(rows)
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= n_good + len(MALFORMED), 30, "the daemon to consume every record")
        wait_until(lambda: daemon.value("streamdet_records_scored_total") >= n_good - STRIDE, 30,
                   "every full stride to be scored")
        yield {"daemon": daemon, "names": names, "labels": labels, "n_good": n_good,
               "bootstrap": broker.bootstrap, "sha256": load_bundle(tiny_bundle).sha256}
    finally:
        daemon.close()


def _replay(bootstrap: str, topic: str, rows) -> None:
    """Produce the rows keyed by entity (payload ts = T0 + dataset row), the malformed records after BAD_AT rows."""
    cfg = load_config(None, ["kafka.partitions=2"])
    ensure_topics(cfg.kafka.at(bootstrap), [topic])
    producer = Producer(cfg.kafka.at(bootstrap))
    for i, values in enumerate(rows):
        if i == BAD_AT:
            for raw in MALFORMED.values():
                producer.produce(topic, TINY_ENTITY.encode(), raw)
        producer.produce(topic, TINY_ENTITY.encode(), record(TINY_ENTITY, FIRST_ROW + i, values))
    producer.flush()
    producer.close()


def test_an_alert_fires_at_the_labelled_anomaly(scenario):
    labels = scenario["labels"]
    start, end = anomaly()  # exclusive end; the only labelled segment of the slice
    assert labels[start - FIRST_ROW:end - FIRST_ROW].all() and labels.sum() == end - start

    def hit(alerts: list[dict]) -> bool:
        return any(a["status"] == "firing" and start - SLACK <= a["start_ts"] - T0 <= end + SLACK for a in alerts)

    alerts = read_topic(scenario["bootstrap"], scenario["names"]["alerts"], hit, 30)
    firing = [a for a in alerts if a["status"] == "firing"]
    assert all(a["_key"] == TINY_ENTITY.encode() and a["entity"] == TINY_ENTITY for a in alerts)
    first = next(a for a in firing if start - SLACK <= a["start_ts"] - T0 <= end + SLACK)
    assert first["score"] > first["threshold"] and first["model"]["name"] == "lstm_ae"
    assert first["top_channels"] and first["source"]["topic"] == scenario["names"]["metrics"]
    # and nowhere else: the fixture's normal rows stay under the threshold (tests/test_fixture_data.py: by a margin)
    assert scenario["daemon"].value("streamdet_alerts_total", status="firing") == 1, firing


def test_the_daemon_consumes_with_the_configured_client(scenario):
    started = [e["msg"] for e in scenario["daemon"].log_events() if e["msg"].startswith("daemon started")]
    assert len(started) == 1 and f"client={scenario['names']['client']}" in started[0]


def test_malformed_records_reach_the_dead_letter_topic_with_their_reason(scenario):
    letters = read_topic(scenario["bootstrap"], scenario["names"]["dlq"], lambda m: len(m) >= len(MALFORMED), 30)
    by_reason = {m["reason"]: m for m in letters}
    assert set(by_reason) == set(MALFORMED)
    assert by_reason["not_json"]["payload"] == "this is not json"
    assert by_reason["wrong_width"]["detail"].startswith("values: 5 entries")
    assert orjson.loads(by_reason["no_entity"]["payload"]) == orjson.loads(MALFORMED["no_entity"])
    # produced in MALFORMED's order right after the first BAD_AT good records of the same key and partition
    offsets = {m["reason"]: m["source"]["offset"] for m in letters}
    assert offsets == {reason: BAD_AT + i for i, reason in enumerate(MALFORMED)}
    assert {(m["source"]["topic"], m["source"]["partition"]) for m in letters} == {(scenario["names"]["metrics"],
                                                                                 _good_partition(scenario))}
    daemon = scenario["daemon"]
    for reason in MALFORMED:
        assert daemon.value("streamdet_records_rejected_total", reason=reason) == 1


def _good_partition(scenario) -> int:
    """The partition of the good records, read from the alerts' source (every alert derives from one)."""
    alerts = read_topic(scenario["bootstrap"], scenario["names"]["alerts"], lambda m: len(m) >= 1, 30)
    return alerts[0]["source"]["partition"]


def test_the_loop_keeps_scoring_after_the_malformed_records(scenario):
    daemon = scenario["daemon"]
    scored = daemon.value("streamdet_records_scored_total")
    # every good record except at most one partial stride at the end has its score, those after the bad ones too
    assert scenario["n_good"] - STRIDE < scored <= scenario["n_good"]
    alerts = read_topic(scenario["bootstrap"], scenario["names"]["alerts"], lambda m: len(m) >= 1, 30)
    assert max(a["source"]["offset"] for a in alerts) > BAD_AT + len(MALFORMED)


def test_metrics_endpoint_serves_the_documented_series(scenario, tiny_bundle):
    from tests.integration.test_io_adapters import DOCUMENTED_SERIES, declared_series

    daemon, topic = scenario["daemon"], scenario["names"]["metrics"]
    status, text = daemon.get("/metrics")
    assert status == 200
    missing = [name for name in DOCUMENTED_SERIES if name not in declared_series(text)]
    assert not missing, f"not exported: {missing}"
    assert daemon.get("/healthz")[0] == 200 and daemon.get("/readyz")[0] == 200
    samples = daemon.samples()
    assert samples[("streamdet_records_consumed_total", (("topic", topic),))] == scenario["n_good"] + len(MALFORMED)
    bundle = (("bundle", load_bundle(tiny_bundle).sha256[:12]), ("entity", TINY_ENTITY))  # the bundle that scored
    assert samples[("streamdet_entity_score", bundle)] >= 0
    assert samples[("streamdet_entity_threshold", bundle)] > 0
    assert samples[("streamdet_ready", ())] == 1.0
    assert samples[("streamdet_batch_size_count", ())] >= 1
    assert samples[("streamdet_inference_seconds_count", ())] == samples[("streamdet_batch_size_count", ())]
    assert samples[("streamdet_commits_total", ())] >= 1
    assert samples[("streamdet_last_record_timestamp_seconds", ())] > T0
    info = {(k, v) for k, v in next(labels for name, labels in samples if name == "streamdet_model_info")}
    assert info == {("name", "lstm_ae"), ("sha256", scenario["sha256"]), ("window", str(TINY_WINDOW)),
                    ("channels", str(C))}
    # gauges exported once a second: one entity active; lag for both assigned partitions, zero once all is read
    wanted = {(("partition", str(p)), ("topic", topic)): 0.0 for p in (0, 1)}
    lags = {}

    def lag_zero() -> bool:
        lags.clear()
        lags.update({labels: v for (name, labels), v in daemon.samples().items() if name == "streamdet_consumer_lag"})
        return lags == wanted and daemon.value("streamdet_entities_active") == 1.0

    assert lag_zero() or wait_until(lag_zero, 10, "lag 0 on partitions 0 and 1, one entity"), lags


def test_alert_counters_match_the_alerts_topic(scenario):
    daemon = scenario["daemon"]
    counted = {status: daemon.value("streamdet_alerts_total", status=status) for status in ("firing", "resolved")}
    alerts = read_topic(scenario["bootstrap"], scenario["names"]["alerts"],
                        lambda m: len(m) >= sum(counted.values()), 30)
    assert counted["firing"] >= 1
    assert {status: float(sum(a["status"] == status for a in alerts)) for status in counted} == counted
    assert len({(a["alert_id"], a["status"]) for a in alerts}) == len(alerts)  # a resolve shares its alert's id


def test_a_partial_stride_is_scored_once_it_waited_max_delay(scenario):
    """No more input and no shutdown: the records left short of a stride are scored after scoring.max_delay_s."""
    daemon, n_good = scenario["daemon"], scenario["n_good"]
    assert n_good % STRIDE, "the replay must end inside a stride"
    wait_until(lambda: daemon.value("streamdet_records_scored_total") == n_good, MAX_DELAY_S + 20,
               "the records of the last partial stride to be scored")


def test_sigterm_exits_0_with_every_valid_record_scored_or_checkpointed(scenario):
    daemon = scenario["daemon"]
    code, seconds = daemon.terminate()
    assert code == 0 and seconds < 5.0, (code, seconds)
    totals = final_totals(daemon)
    assert totals is not None and totals["consumed"] == scenario["n_good"] + len(MALFORMED)
    assert totals["scored"] + totals["pending_in_checkpoint"] == scenario["n_good"]
