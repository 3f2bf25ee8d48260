"""The io adapters on real components: the embedded broker, kafka-python, a real HTTP server, real log lines."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

import orjson
import pytest
from confluent_kafka import TopicPartition

from streamdet.config import load_config
from streamdet.errors import ConfigError
from streamdet.io.admin import ensure_topics
from streamdet.io.client import BrokerUnavailable
from streamdet.io.connection import error_kind, is_outage, security_options
from streamdet.io.factory import make_client
from streamdet.io.producer import Producer
from streamdet.io.logs import setup_logging
from streamdet.io.metrics import Metrics
from streamdet.io.broker import EmbeddedBroker
from tests.conftest import KAFKA_CLIENTS, stop_process, wait_until

DOCUMENTED_SERIES = (
    "streamdet_records_consumed_total", "streamdet_records_scored_total", "streamdet_records_rejected_total",
    "streamdet_alerts_total", "streamdet_entity_score", "streamdet_entity_threshold", "streamdet_entity_anomalous",
    "streamdet_alert_channel_share", "streamdet_entities_active", "streamdet_batch_size",
    "streamdet_inference_seconds", "streamdet_end_to_end_latency_seconds", "streamdet_consumer_lag",
    "streamdet_last_record_timestamp_seconds", "streamdet_commits_total", "streamdet_kafka_errors_total",
    "streamdet_ready", "streamdet_model_info", "streamdet_model_reloads_total",
)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def declared_series(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


@pytest.mark.kafka
@pytest.mark.parametrize("client_name", KAFKA_CLIENTS)
def test_client_polls_keyed_records_commits_and_reports_lag(broker, names, client_name):
    cfg = load_config(None, [f"kafka.group_id={names['group']}", "kafka.partitions=2",
                             "kafka.session_timeout_ms=6000", f"kafka.client={client_name}"])
    assert ensure_topics(cfg.kafka.at(broker.bootstrap), [names["metrics"]]) == [names["metrics"]]
    assert ensure_topics(cfg.kafka.at(broker.bootstrap), [names["metrics"]]) == []  # idempotent
    producer = Producer(cfg.kafka.at(broker.bootstrap))
    for i in range(100):
        producer.produce(names["metrics"], b"entity-a", orjson.dumps({"i": i}))
    assert producer.flush() == 100
    producer.close()

    client = make_client(cfg.kafka.at(broker.bootstrap))
    assert type(client).__name__ == {"kafka-python": "KafkaPythonClient", "confluent": "ConfluentClient"}[client_name]
    assigned = []
    client.subscribe([names["metrics"]], assigned.extend, lambda revoked: None)
    first = wait_until(lambda: client.poll(200, 10), 60, "the first records")
    values = [orjson.loads(raw)["i"] for raw, _ in first]
    topic, partition, offset, ts_ms = first[0][1]
    assert values == list(range(10))  # one key -> one partition, in order
    assert (topic, offset) == (names["metrics"], 0) and ts_ms > 0
    assert (topic, partition) in assigned and client.assignment() == set(assigned)
    assert client.lag()[(topic, partition)] == 90
    client.commit({(topic, partition): 10})
    client.close()

    again = make_client(cfg.kafka.at(broker.bootstrap))
    again.subscribe([names["metrics"]], lambda a: None, lambda r: None)
    resumed = wait_until(lambda: again.poll(200, 5), 60, "records after the committed offset")
    again.close()
    assert [orjson.loads(raw)["i"] for raw, _ in resumed] == [10, 11, 12, 13, 14]


@pytest.mark.kafka
def test_confluent_lag_follows_the_assignment_through_rebalances(broker, names):
    """lag() reads the assignment again only after a rebalance callback (it runs after every poll, and reading the
    assignment costs more than the rest of it): a partition taken away and given back must be in its answer again."""
    cfg = load_config(None, [f"kafka.group_id={names['group']}", "kafka.partitions=2", "kafka.client=confluent",
                             "kafka.session_timeout_ms=6000"])
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [names["metrics"]])
    producer = Producer(kafka)
    for i in range(40):
        producer.produce(names["metrics"], f"entity-{i % 8}".encode(), orjson.dumps({"i": i}))
    assert producer.flush() == 40
    producer.close()
    first, second = make_client(kafka), make_client(kafka)
    try:
        first.subscribe([names["metrics"]], lambda a: None, lambda r: None)
        wait_until(lambda: first.poll(100, 1) and len(first.assignment()) == 2, 60, "the first client's partitions")
        wait_until(lambda: first.poll(100, 1) is not None and set(first.lag()) == first.assignment(), 30,
                   "lag of both partitions")
        second.subscribe([names["metrics"]], lambda a: None, lambda r: None)
        wait_until(lambda: (first.poll(100, 1), second.poll(100, 1)) and len(first.assignment()) == 1, 60,
                   "a partition moved to the second client")
        assert set(first.lag()) == first.assignment()  # read again after the revoke
        second.close()
        second = None
        wait_until(lambda: first.poll(100, 1) is not None and len(first.assignment()) == 2, 60,
                   "the partition back")
        wait_until(lambda: first.poll(100, 1) is not None and set(first.lag()) == first.assignment(), 30,
                   "lag of both partitions")
    finally:
        for client in (first, second):
            if client is not None:
                client.close()


@pytest.mark.kafka
def test_confluent_probe_raises_an_outage_once_the_broker_is_gone(names):
    """librdkafka only logs a broker it cannot reach; the probe must turn that into an error the daemon acts on."""
    cfg = load_config(None, ["kafka.client=confluent", f"kafka.group_id={names['group']}"])
    with EmbeddedBroker() as own:
        ensure_topics(cfg.kafka.at(own.bootstrap), [names["metrics"]])
        client = make_client(cfg.kafka.at(own.bootstrap))
        try:
            client.subscribe([names["metrics"]], lambda a: None, lambda r: None)
            client.probe(5000)  # answers while the broker is up
            own.stop()
            with pytest.raises(BrokerUnavailable) as info:
                client.probe(500)
            assert is_outage(info.value) and error_kind(info.value) in ("_TRANSPORT", "_TIMED_OUT")  # down vs frozen
        finally:
            client._consumer.close()  # the producer's close would wait for the absent broker


@pytest.mark.kafka
def test_confluent_commit_to_a_frozen_broker_is_an_outage_within_its_deadline_then_commits_again(names):
    """librdkafka's synchronous commit waits for a frozen coordinator for minutes; the daemon's loop would hang with
    /readyz still 200. The commit must fail as an outage within COMMIT_TIMEOUT_S and succeed once the broker is back."""
    import os
    import signal
    import time

    from streamdet.io.confluent import COMMIT_TIMEOUT_S

    cfg = load_config(None, ["kafka.client=confluent", f"kafka.group_id={names['group']}"])
    with EmbeddedBroker() as own:
        kafka = cfg.kafka.at(own.bootstrap)
        ensure_topics(kafka, [names["metrics"]])
        producer = Producer(kafka)
        for i in range(20):
            producer.produce(names["metrics"], b"entity-a", orjson.dumps({"i": i}))
        assert producer.flush() == 20
        producer.close()
        client = make_client(kafka)
        try:
            client.subscribe([names["metrics"]], lambda a: None, lambda r: None)
            first = wait_until(lambda: client.poll(200, 10), 60, "the first records")
            topic, partition = first[0][1][:2]
            client.commit({(topic, partition): 5})
            stop_process(own.pid)
            try:
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable) as info:
                    client.commit({(topic, partition): 10})
                assert time.monotonic() - started < COMMIT_TIMEOUT_S + 2 and is_outage(info.value)
                with pytest.raises(BrokerUnavailable, match="still unanswered"):  # one commit in flight at a time
                    client.commit({(topic, partition): 10})
                assert not client._commit.settle(0.1)  # close() would not free the consumer under it
            finally:
                os.kill(own.pid, signal.SIGCONT)

            def commits_again():
                try:
                    client.commit({(topic, partition): 10})
                except BrokerUnavailable:
                    return False
                return True
            wait_until(commits_again, 60, "a commit after the broker thawed")
            assert client._commit.settle(0)
            committed = client._consumer.committed([TopicPartition(topic, partition)], timeout=10)
            assert committed[0].offset == 10
        finally:
            client.close()


def test_confluent_security_settings_map_to_librdkafka(monkeypatch):
    from streamdet.io.confluent import librdkafka_options

    cfg = load_config(None, ["kafka.security.protocol=SASL_SSL", "kafka.security.sasl_mechanism=SCRAM-SHA-512",
                             "kafka.security.sasl_username=svc", "kafka.security.sasl_password_env=STREAMDET_TEST_PW",
                             "kafka.security.ssl_cafile=/etc/ca.pem", "kafka.group_id=g"])
    monkeypatch.delenv("STREAMDET_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="sasl_password_env: environment variable STREAMDET_TEST_PW"):
        librdkafka_options(cfg.kafka.at("127.0.0.1:9092"))
    monkeypatch.setenv("STREAMDET_TEST_PW", "s3cret")
    opts = librdkafka_options(cfg.kafka.at("127.0.0.1:9092"))
    assert {k: opts[k] for k in ("bootstrap.servers", "group.id", "enable.auto.commit", "security.protocol",
                                 "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location")} == {
        "bootstrap.servers": "127.0.0.1:9092", "group.id": "g", "enable.auto.commit": False,
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
        "sasl.password": "s3cret", "ssl.ca.location": "/etc/ca.pem"}


@pytest.mark.kafka
def test_both_consumers_get_the_configured_fetch_wait(broker):
    """kafka.fetch_max_wait_ms bounds how long a broker may hold an empty fetch (the embedded one holds it that
    long even when records arrive meanwhile: config/smd.yaml)."""
    from streamdet.io.confluent import librdkafka_options

    cfg = load_config(None, ["kafka.fetch_max_wait_ms=35", "kafka.client=kafka-python"])
    assert librdkafka_options(cfg.kafka.at(broker.bootstrap))["fetch.wait.max.ms"] == 35
    client = make_client(cfg.kafka.at(broker.bootstrap))
    try:
        assert client._consumer.config["fetch_max_wait_ms"] == 35
    finally:
        client.close()
    with pytest.raises(ConfigError, match="fetch_max_wait_ms"):
        load_config(None, ["kafka.fetch_max_wait_ms=0"])


def test_security_settings_pass_through_with_password_from_env(monkeypatch):
    overrides = ["kafka.security.protocol=SASL_SSL", "kafka.security.sasl_mechanism=SCRAM-SHA-512",
                 "kafka.security.sasl_username=svc", "kafka.security.sasl_password_env=STREAMDET_TEST_PW",
                 "kafka.security.ssl_cafile=/etc/ca.pem"]
    cfg = load_config(None, overrides)
    monkeypatch.delenv("STREAMDET_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="sasl_password_env: environment variable STREAMDET_TEST_PW"):
        security_options(cfg.kafka)
    monkeypatch.setenv("STREAMDET_TEST_PW", "s3cret")
    assert security_options(cfg.kafka) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret", "ssl_cafile": "/etc/ca.pem"}


def test_metrics_endpoints_and_documented_series_over_http():
    metrics = Metrics(load_config(None, ["metrics.port=0"]).metrics)
    port = metrics.start_server()
    try:
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/readyz")[0] == 503  # no model, no partitions
        metrics.set_model("lstm_ae", "ab" * 32, 32, 38)
        assert http_get(port, "/readyz")[0] == 503  # still no partitions
        metrics.set_assigned(True)
        assert http_get(port, "/readyz")[0] == 200
        status, text = http_get(port, "/metrics")
        assert status == 200
        missing = [name for name in DOCUMENTED_SERIES if name not in declared_series(text)]
        assert not missing, f"series not exported: {missing}"
        assert 'streamdet_model_info{channels="38",name="lstm_ae"' in text and "streamdet_ready 1.0" in text
        metrics.loop_stopped()
        assert http_get(port, "/healthz")[0] == 503 and http_get(port, "/readyz")[0] == 503
    finally:
        metrics.stop_server()


def exported_entities(text: str) -> set[str]:
    return {line.split('entity="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("streamdet_entity_score{")}


def test_entity_series_are_capped_to_the_most_anomalous_and_stale_ones_vanish():
    metrics = Metrics(load_config(None, ["metrics.port=0", "metrics.max_entity_series=2"]).metrics)
    port = metrics.start_server()
    try:
        for i in range(6):
            metrics.entity_scored(f"e{i}", score=float(i), threshold=4.0)
        metrics.alert("firing", "e1", [("cpu_r", 0.7), ("mem_u", 0.2)])  # firing outranks a higher score
        text = http_get(port, "/metrics")[1]
        exported = exported_entities(text)
        assert exported == {"e1", "e5"}
        assert 'streamdet_alert_channel_share{channel="cpu_r",entity="e1",rank="1"} 0.7' in text
        metrics.forget_entities(["e5"])
        metrics.alert("resolved", "e1", [])
        text = http_get(port, "/metrics")[1]
        exported = exported_entities(text)
        assert exported == {"e4", "e3"}
        assert "streamdet_alert_channel_share{" not in text
    finally:
        metrics.stop_server()


def test_lag_series_follow_the_assignment():
    metrics = Metrics(load_config(None, ["metrics.port=0"]).metrics)
    metrics.set_lag({("metrics", 0): 5, ("metrics", 1): 7})
    metrics.set_lag({("metrics", 1): 2})
    text = metrics.exposition().decode()
    assert 'streamdet_consumer_lag{partition="1",topic="metrics"} 2.0' in text
    assert 'partition="0"' not in text


def test_json_logs_are_one_event_per_line_with_context():
    stream = io.StringIO()
    setup_logging(load_config(None, ["logging.format=json"]).logging, stream)
    try:
        logging.getLogger("streamdet.test").info("alert %s", "firing", extra={"entity": "m-1", "offset": 42})
        event = orjson.loads(stream.getvalue().splitlines()[-1])
        assert event["msg"] == "alert firing" and event["entity"] == "m-1" and event["offset"] == 42
        assert event["level"] == "INFO" and event["logger"] == "streamdet.test"
        setup_logging(load_config(None, ["logging.format=text"]).logging, stream)
        logging.getLogger("streamdet.test").warning("late", extra={"partition": 3})
        assert stream.getvalue().splitlines()[-1].endswith("WARNING streamdet.test: late partition=3")
    finally:
        logging.getLogger().handlers.clear()
