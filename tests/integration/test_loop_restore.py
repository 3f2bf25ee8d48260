"""/healthz through a long restore. A restore reads the whole changelog inside the poll that assigns the partitions
(minutes for a large uncompacted one); the liveness probe on /healthz must not take that for a stuck loop, or it
restarts the daemon into the same restore, for ever."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Producer as RawProducer

from streamdet.config import load_config
from streamdet.io import metrics as metrics_module
from streamdet.io.admin import ensure_topics
from streamdet.serve.daemon import Daemon
from tests.conftest import SMD_CONFIG, tiny_overrides, wait_until
from tests.integration.helpers import record

STALE_S = 1.5  # /healthz's silence limit in this test (30 s in production): the restore below lasts several times it
RECORDS = 900_000  # changelog tombstones (evicted entities' keys): a read of several seconds (600,000 took 3.0 s on an idle machine)


class Events(logging.Handler):
    """Wall-clock times of the daemon's log lines, to know when the restore ran."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        for start in ("partitions assigned", "restored ", "restore interrupted"):
            if record.getMessage().startswith(start):
                self.times.setdefault(start, record.created)


def _fill_changelog(bootstrap: str, topic: str) -> None:
    producer = RawProducer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(RECORDS):
        while True:
            try:
                producer.produce(topic, None, b"gone-%07d" % n)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def _config_with_a_long_changelog(broker, names, tiny_bundle, client: str = "confluent"):
    """The daemon's config, with its state topic holding RECORDS records to read at every restore."""
    state = f"state-{names['group']}"
    cfg = load_config(SMD_CONFIG, tiny_overrides(tiny_bundle) + [
        f"kafka.metrics_topic={names['metrics']}", f"kafka.alerts_topic={names['alerts']}",
        f"kafka.dlq_topic={names['dlq']}", f"kafka.group_id={names['group']}", f"kafka.state_topic={state}",
        "kafka.partitions=2", "metrics.port=0", "logging.level=WARNING", f"kafka.client={client}"])
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [kafka.metrics_topic])
    ensure_topics(kafka, [state], compacted=True)
    _fill_changelog(broker.bootstrap, state)
    return cfg


@contextmanager
def running_daemon(cfg, bundle, bootstrap: str) -> Iterator[tuple[Daemon, Events, list[int]]]:
    """The daemon's loop in a thread, its log lines' times in Events; stopped and joined on the way out (its exit
    code lands in the list)."""
    events = Events()
    logging.getLogger("streamdet").addHandler(events)
    daemon = Daemon(cfg, str(bundle), bootstrap=bootstrap)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    runner.start()
    try:
        yield daemon, events, codes
    finally:
        daemon.stop()
        runner.join(60)
        logging.getLogger("streamdet").removeHandler(events)


def test_healthz_stays_200_while_a_long_restore_reads_the_changelog(broker, names, tiny_bundle, monkeypatch, caplog):
    monkeypatch.setattr(metrics_module, "HEALTH_STALE_S", STALE_S)
    caplog.set_level(logging.INFO, logger="streamdet")
    cfg = _config_with_a_long_changelog(broker, names, tiny_bundle)
    health: list[tuple[float, bool]] = []
    with running_daemon(cfg, tiny_bundle, broker.bootstrap) as (daemon, events, codes):
        def restored() -> bool:
            health.append((time.time(), daemon.metrics.healthy()))
            return "restored " in events.times

        wait_until(restored, 180, "the restore to end", interval_s=0.05)
    began, ended = events.times["partitions assigned"], events.times["restored "]
    assert ended - began > 2 * STALE_S, f"the restore took {ended - began:.1f} s: too short to test anything"
    during = [ok for t, ok in health if began <= t <= ended]
    assert during and all(during), f"/healthz failed {during.count(False)} of {len(during)} times during the restore"
    assert codes == [0]


def test_a_stop_during_a_long_restore_ends_the_daemon_without_committing_what_it_did_not_restore(
        broker, client_names, tiny_bundle, caplog):
    """A SIGTERM (here stop()) during the restore ends it: the daemon exits 0 at once instead of reading the rest of
    the changelog, and commits nothing of the partitions it did not restore (their next owner restores them; with
    kafka-python the poll that ran the restore may already return their records: they are left unread)."""
    caplog.set_level(logging.INFO, logger="streamdet")
    names = client_names
    cfg = _config_with_a_long_changelog(broker, names, tiny_bundle, names["client"])
    producer = RawProducer({"bootstrap.servers": broker.bootstrap})
    for n in range(50):  # records a wrong shutdown would commit
        producer.produce(names["metrics"], record("rig-a", n, np.zeros(8)), b"rig-a")
    assert producer.flush(30) == 0
    with running_daemon(cfg, tiny_bundle, broker.bootstrap) as (daemon, events, codes):
        wait_until(lambda: "partitions assigned" in events.times, 60, "the restore to begin", interval_s=0.01)
        daemon.stop()  # the restore has just begun: reading the changelog to its end takes seconds
    assert codes == [0]
    assert "restore interrupted" in events.times and "restored " not in events.times, events.times
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": names["group"]})
    try:
        committed = consumer.committed([TopicPartition(names["metrics"], p) for p in (0, 1)], timeout=10)
    finally:
        consumer.close()
    assert all(tp.offset < 0 for tp in committed), committed  # no offset committed
