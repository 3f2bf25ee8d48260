"""The librdkafka producer keeps io/producer.py's contract on a real broker: flush means acknowledged, and no record is
lost when the broker stops answering, when librdkafka gives up on a record, or when its queue is full."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Optional

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.broker import EmbeddedBroker
from streamdet.io.client import KafkaDeliveryError
from streamdet.io.confluent import connection_options
from streamdet.io.librdkafka_producer import LibrdkafkaProducer
from streamdet.io.readers import read_to_end
from tests.conftest import stop_process

pytestmark = pytest.mark.kafka


def values_of(kafka, topic: str) -> list[bytes]:
    return [value for _key, value in read_to_end(kafka, topic, 30)]


@contextmanager
def frozen(broker: EmbeddedBroker):
    """The broker process stopped (a network partition, as the reliability suite makes one)."""
    stop_process(broker.pid)
    try:
        yield
    finally:
        os.kill(broker.pid, signal.SIGCONT)


def producer_on(bootstrap: str, topic: str, properties: Optional[dict] = None) -> tuple:
    """(the kafka section pointed at `bootstrap`, a LibrdkafkaProducer with these extra librdkafka properties), with
    `topic` created."""
    kafka = load_config(None, []).kafka.at(bootstrap)
    ensure_topics(kafka, [topic])
    return kafka, LibrdkafkaProducer({**connection_options(kafka), **(properties or {})})


def flush_until_acknowledged(producer: LibrdkafkaProducer, deadline_s: float = 60.0) -> int:
    """Flush again after each KafkaDeliveryError, as the daemon's commit rounds do, until everything is acknowledged."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return producer.flush(5)
        except KafkaDeliveryError:
            if time.monotonic() > deadline:
                raise


def test_flush_returns_the_acknowledged_count_and_keyed_records_arrive_in_order(broker, names):
    kafka, producer = producer_on(broker.bootstrap, names["alerts"])
    for i in range(300):
        producer.produce(names["alerts"], b"entity-a", b"%d" % i)
    assert producer.flush() == 300 and producer.unacknowledged == 0
    assert producer.flush() == 0  # nothing new
    assert values_of(kafka, names["alerts"]) == [b"%d" % i for i in range(300)]
    producer.close()


def test_a_frozen_broker_fails_the_flush_within_its_timeout_and_the_next_flush_delivers_everything(names):
    with EmbeddedBroker() as own:
        kafka, producer = producer_on(own.bootstrap, names["alerts"])
        producer.produce(names["alerts"], b"e", b"before")
        assert producer.flush() == 1
        with frozen(own):
            for i in range(50):
                producer.produce(names["alerts"], b"e", b"%d" % i)
            started = time.monotonic()
            with pytest.raises(KafkaDeliveryError, match="50 of 50 records not acknowledged"):
                producer.flush(2)
            assert time.monotonic() - started < 4 and producer.unacknowledged == 50
        assert flush_until_acknowledged(producer) == 50
        assert values_of(kafka, names["alerts"]) == [b"before"] + [b"%d" % i for i in range(50)]
        producer.close()


def test_records_librdkafka_gave_up_on_are_produced_again(names):
    """A message timeout shorter than the outage: librdkafka reports every record failed; none may be lost."""
    with EmbeddedBroker() as own:
        kafka, producer = producer_on(own.bootstrap, names["alerts"], {"message.timeout.ms": 1000})
        with frozen(own):
            for i in range(20):
                producer.produce(names["alerts"], b"e", b"%d" % i)
            with pytest.raises(KafkaDeliveryError, match="timed out"):
                producer.flush(3)  # past the message timeout: librdkafka's reports come back as failures
            assert producer.unacknowledged == 20
        assert flush_until_acknowledged(producer) == 20
        assert sorted(values_of(kafka, names["alerts"]), key=int) == [b"%d" % i for i in range(20)]
        producer.close()


def test_records_that_find_librdkafkas_queue_full_wait_in_order_and_nothing_raises(names):
    with EmbeddedBroker() as own:
        kafka, producer = producer_on(own.bootstrap, names["alerts"], {"queue.buffering.max.messages": 10})
        with frozen(own):
            for i in range(40):  # 30 more than librdkafka's queue takes
                producer.produce(names["alerts"], b"e", b"%d" % i)
            assert producer.unacknowledged == 40
        assert flush_until_acknowledged(producer) == 40
        assert values_of(kafka, names["alerts"]) == [b"%d" % i for i in range(40)]
        producer.close()


def test_librdkafkas_log_lines_are_debug_records_not_raw_stderr(capfd, caplog):
    """An unreachable broker: librdkafka's FAIL lines must reach the daemon's logging (its text or JSON format) at
    DEBUG, its errors come as warnings through error_cb, and nothing is written raw to the process's stderr."""
    import logging

    from streamdet.io.broker import free_port

    kafka = load_config(None, []).kafka.at(f"127.0.0.1:{free_port()}")
    producer = LibrdkafkaProducer(connection_options(kafka))
    with caplog.at_level(logging.DEBUG):
        producer.produce("nowhere", b"e", b"v")
        with pytest.raises(KafkaDeliveryError):
            producer.flush(1.5)
    assert any(r.name == "streamdet.librdkafka" and r.levelno == logging.DEBUG and "Connect to" in r.getMessage()
               for r in caplog.records)
    assert any(r.name == "streamdet.io.confluent" and r.levelno == logging.WARNING for r in caplog.records)
    assert "|FAIL|" not in capfd.readouterr().err
