"""Producing refused while consuming works (an ACL change, an alerts topic without a leader): the daemon stops
fetching instead of piling up in memory what it cannot deliver, says so on /metrics, and loses nothing once the
broker takes its writes again."""

from __future__ import annotations

import pytest

from streamdet.io.broker import EmbeddedBroker, free_port
from tests.conftest import wait_until
from tests.integration.helpers import final_totals

from .helpers import (alert_mismatches, kafka_errors, produce, published_alerts, reference_alerts, scenario_records,
                      start_daemon)
from .produce_gate import ProduceGate

pytestmark = pytest.mark.kafka

REFUSED_ID = "streamdet-refused"  # the daemon's kafka.client_id; the test's own producer keeps the default


def test_refused_produce_pauses_fetching_and_loses_nothing(tiny_bundle, client_names, tmp_path):
    records = scenario_records()
    want = reference_alerts(tiny_bundle, records)
    third = len(records) // 3
    topic = client_names["metrics"]
    broker_port = free_port()
    with ProduceGate(broker_port, REFUSED_ID) as gate, \
            EmbeddedBroker(port=broker_port, advertised_port=gate.port) as broker:
        daemon = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "daemon.log",
                              f"kafka.client_id={REFUSED_ID}")
        try:
            daemon.wait_ready()
            produce(broker.bootstrap, topic, records[:third])
            wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=topic) >= third, 30,
                       "the first third")
            gate.refuse()
            produce(broker.bootstrap, topic, records[third:2 * third])
            wait_until(lambda: daemon.value("streamdet_intake_held") == 1, 60, "fetching to pause")
            consumed = daemon.value("streamdet_records_consumed_total", topic=topic)
            errors = kafka_errors(daemon)
            produce(broker.bootstrap, topic, records[2 * third:])
            # two more failed flushes: the loop has polled between them, so without the pause it would have fetched
            wait_until(lambda: kafka_errors(daemon) >= errors + 2, 90, "two more failed flushes")
            assert daemon.value("streamdet_records_consumed_total", topic=topic) == consumed
            assert daemon.value("streamdet_unacknowledged_records") > 0 and gate.refused > 0
            assert daemon.get("/healthz")[0] == 200 and daemon.get("/readyz")[0] == 503
            gate.allow()
            wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=topic) >= len(records), 90,
                       "every record consumed once the broker takes the daemon's writes again")
            wait_until(lambda: daemon.value("streamdet_intake_held") == 0, 30, "fetching to resume")
            messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 60)
            assert not alert_mismatches(want, messages), alert_mismatches(want, messages)
            code, _ = daemon.terminate(20)
            totals = final_totals(daemon)
            assert code == 0 and totals["scored"] + totals["pending_in_checkpoint"] >= len(records)
            paused = [e for e in daemon.log_events() if e.get("msg", "").startswith("fetching paused")]
            assert len(paused) >= 1 and any(e.get("msg", "").startswith("fetching resumed")
                                            for e in daemon.log_events())
        finally:
            daemon.close()


def test_the_producer_delivers_again_after_its_writes_were_refused(tmp_path):
    """The acknowledged producer every writer uses (the daemon's kafka-python client, replays, the bridge's dead
    letters) sends what was refused again once the broker takes it (an idempotent producer never did: every later
    batch failed, OutOfOrderSequenceNumber and then a producer id it could not renew)."""
    from streamdet.config import load_config
    from streamdet.io.admin import ensure_topics
    from streamdet.io.client import KafkaDeliveryError
    from streamdet.io.producer import Producer

    broker_port = free_port()
    with ProduceGate(broker_port, REFUSED_ID) as gate, \
            EmbeddedBroker(port=broker_port, advertised_port=gate.port) as broker:
        kafka = load_config(None, [f"kafka.client_id={REFUSED_ID}", "kafka.partitions=2"]).kafka.at(broker.bootstrap)
        ensure_topics(kafka, ["first", "second"])
        producer = Producer(kafka)
        try:
            for n in range(6):
                producer.produce("first", b"k%d" % n, b"before")
            assert producer.flush(10) == 6
            gate.refuse()
            for n in range(6):
                producer.produce(("first", "second")[n % 2], b"k%d" % n, b"refused")
            with pytest.raises(KafkaDeliveryError):
                producer.flush(5)
            assert producer.unacknowledged == 6 and gate.refused > 0
            gate.allow()
            assert producer.flush(10) == 6 and producer.unacknowledged == 0
        finally:
            producer.close()
