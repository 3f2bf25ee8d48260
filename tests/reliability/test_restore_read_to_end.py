"""A restore reads the changelog to its end however long that takes while records keep coming; only a broker that
stops giving records before the end fails it. An uncompacted changelog of a large fleet takes minutes to read, and
a deadline on the whole read made every start of the daemon fail (a crash loop) although the read was progressing."""

from __future__ import annotations

import types

import pytest
from kafka import KafkaProducer

from streamdet.config import load_config
from streamdet.io import readers
from streamdet.io.admin import ensure_topics
from streamdet.io.client import KafkaDeliveryError

pytestmark = pytest.mark.kafka

RECORDS = 2000  # more than one poll returns (kafka-python's max_poll_records is 500)


class Clock:
    """The readers module's monotonic clock, moved by the test: no wall-clock waiting, and deterministic."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def changelog(broker, names):
    kafka = load_config(None, ["kafka.partitions=2"]).kafka.at(broker.bootstrap)
    topic = f"state-{names['group']}"
    ensure_topics(kafka, [topic], compacted=True)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(RECORDS):
        producer.send(topic, key=b"e%d" % (i % 50), value=b"v%d" % i, partition=i % 2)
    producer.flush()
    producer.close()
    return kafka, topic


def test_a_read_that_takes_longer_than_the_timeout_but_keeps_receiving_records_reads_to_the_end(changelog,
                                                                                                monkeypatch):
    kafka, topic = changelog
    clock = Clock()
    monkeypatch.setattr(readers, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    values = []
    for _key, value in readers.read_to_end(kafka, topic, timeout_s=10.0):
        values.append(value)
        clock.now += 1.0  # the restore takes a second per record: 2,000 s in all, 200 times the timeout
    assert sorted(values) == sorted(b"v%d" % i for i in range(RECORDS))


def test_a_read_that_receives_nothing_for_the_timeout_before_the_end_fails_naming_the_topic(changelog,
                                                                                            monkeypatch):
    """The end offsets say there is more, the broker gives nothing (here: every poll comes back empty)."""
    kafka, topic = changelog
    clock = Clock()
    monkeypatch.setattr(readers, "time", types.SimpleNamespace(monotonic=clock.monotonic))

    def nothing(self, timeout_ms=0, **_):
        clock.now += timeout_ms / 1000.0
        return {}

    monkeypatch.setattr(readers.KafkaConsumer, "poll", nothing)
    with pytest.raises(KafkaDeliveryError, match=topic):
        list(readers.read_to_end(kafka, topic, timeout_s=10.0))

