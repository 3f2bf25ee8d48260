"""A StreamClient whose metrics consumer is confluent-kafka (librdkafka): `kafka.client: confluent`, the default.

Why a second client: the consumer is the daemon's hot path, and kafka-python parses every fetched record in Python
on the daemon's own thread. librdkafka fetches and parses in C on background threads, so the daemon thread is left
with the pipeline: measured 1.3x to 1.7x the end-to-end records/s of kafka-python on the same broker
(`tools/bench_pipeline.py`). It produces (alerts, dead letters, checkpoints) through librdkafka as well
(io/librdkafka_producer.py: the same acknowledged-flush contract as io/producer.py's, which the delivery rules of
DESIGN.md §5 are built on, without building every batch in Python on the daemon's thread).

librdkafka reports a broker it cannot reach through callbacks instead of raising, so `probe` asks for metadata with a
deadline and raises BrokerUnavailable, which the daemon treats as an outage like kafka-python's errors. Rebalance
callbacks run inside `consume()` on the daemon's thread, where a synchronous commit is allowed.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable, Optional

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..config import KafkaConfig
from ..types import Partition, Source
from .client import BrokerUnavailable, ProducingClient
from .connection import bootstrap_of, security_options
from .librdkafka_producer import LibrdkafkaProducer

log = logging.getLogger(__name__)

COMMITTED_TIMEOUT_S = 5.0
# librdkafka's synchronous commit has no deadline: with the coordinator frozen it waits for it for minutes (measured:
# still blocked after 190 s, socket.timeout.ms notwithstanding). The daemon's loop must notice an outage in seconds
# (/readyz, the back-off), as kafka-python's commit does with its 5 s timeout.
COMMIT_TIMEOUT_S = 5.0
# librdkafka stops fetching a partition whose local queue is over its thresholds and looks again after this long. Its
# default, 1000 ms, is longer than the daemon needs to drain that queue while catching up, so it sat idle for up to
# 300 ms every second waiting for the next fetch (tools/bench_pipeline.py at stride 20: 110k -> 125k records/s).
FETCH_QUEUE_BACKOFF_MS = 100
_new = tuple.__new__  # Source(...) without NamedTuple's keyword handling: one per record on the hot path


# kafka-python's security keyword -> the librdkafka property of the same setting
_LIBRDKAFKA_NAMES = {"security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanism",
                     "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
                     "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
                     "ssl_keyfile": "ssl.key.location"}


def connection_options(k: KafkaConfig) -> dict:
    """Bootstrap, client id and security for any librdkafka client of the kafka section; the security settings are
    connection.security_options' (same checks, same password lookup) under librdkafka's names."""
    opts = {"bootstrap.servers": bootstrap_of(k), "client.id": k.client_id, "error_cb": _log_error,
            "logger": _LibrdkafkaLog(logging.getLogger("streamdet.librdkafka"), {})}
    opts.update({_LIBRDKAFKA_NAMES[key]: value for key, value in security_options(k).items()})
    return opts


def librdkafka_options(k: KafkaConfig) -> dict:
    """The consumer's librdkafka configuration from the kafka section (manual commits, earliest reset)."""
    return dict(connection_options(k), **{
        "group.id": k.group_id, "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms, "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        "fetch.wait.max.ms": k.fetch_max_wait_ms})


class _LibrdkafkaLog(logging.LoggerAdapter):
    """librdkafka's own log lines as DEBUG records of streamdet.librdkafka (in the daemon's text or JSON format, not
    raw on stderr): its errors already come through `error_cb` as warnings, and the rest is connection chatter."""

    def log(self, level, msg, *args, **kwargs):
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


def _log_error(err: KafkaError) -> None:
    """librdkafka's asynchronous errors (a broker down, mostly): logged; `probe` turns an outage into an exception."""
    log.warning("librdkafka: %s", err)


def _unavailable(exc: KafkaException, what: str) -> BrokerUnavailable:
    err = exc.args[0] if exc.args else None
    name = err.name() if isinstance(err, KafkaError) else type(exc).__name__
    detail = err.str() if isinstance(err, KafkaError) else str(exc)
    return BrokerUnavailable(f"{what}: {detail}", kind=name)


class ConfluentClient(ProducingClient):
    """StreamClient with a librdkafka consumer (manual commits) and the librdkafka acknowledged producer."""

    def __init__(self, kafka: KafkaConfig):
        self._consumer = Consumer(librdkafka_options(kafka))
        self._producer = LibrdkafkaProducer(connection_options(kafka))
        self._consumed: dict[Partition, int] = {}  # next offset to read, per partition
        self._start: dict[Partition, int] = {}  # committed offset at assignment, per partition
        self._topics: list[str] = []
        self._commit = BoundedCommit(self._consumer)
        # the assignment as read after the last rebalance (None: read it again); lag() runs after every poll, and
        # Consumer.assignment() costs ~14 us a call (~9 % of the loop at 10,000 hosts x 1 record per 10 s)
        self._assigned: Optional[list[TopicPartition]] = None
        self._holding = False  # hold_intake(True) paused the assignment
        self._paused_once = False

    def subscribe(self, topics, on_assign, on_revoke):
        def assigned(_consumer, partitions):
            self._assigned = None
            if self._paused_once and not self._holding and partitions:
                self._consumer.resume(partitions)  # a pause outlives a rebalance: released during one, it would stay
            self._note_committed(partitions)
            on_assign([Partition(tp.topic, tp.partition) for tp in partitions])

        def revoked(_consumer, partitions):
            self._assigned = None
            on_revoke([Partition(tp.topic, tp.partition) for tp in partitions])

        self._topics = list(topics)
        self._consumer.subscribe(self._topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def _note_committed(self, partitions) -> None:
        """The group's committed offsets of newly assigned partitions: where reading starts, for `lag` until the
        first record arrives (one request per rebalance; without an answer lag falls back to the low watermark)."""
        try:
            committed = self._consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("committed offsets unavailable: %s", exc)
            return
        for tp in committed:
            if tp.offset >= 0:
                self._start[Partition(tp.topic, tp.partition)] = tp.offset

    def poll(self, timeout_ms, max_records):
        try:
            messages = self._take(timeout_ms, max_records)
        except KafkaException as exc:
            raise _unavailable(exc, "consume") from exc
        items: list[tuple[bytes, Source]] = []
        append, consumed = items.append, self._consumed
        for message in messages:
            if message.error() is not None:
                self._consume_error(message.error())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            append((message.value(), _new(Source, (topic, partition, offset, message.timestamp()[1]))))
            consumed[topic, partition] = offset + 1
        return items

    def _take(self, timeout_ms: int, max_records: int) -> list:
        """Everything queued now, up to max_records; when nothing is, wait up to timeout_ms for the first record
        only. (consume(n, timeout) alone waits until n records are queued or the timeout passes, so a poll that
        found 4,000 records ready sat idle until the next fetch arrived, and at low rates every poll added the
        whole timeout to the latency.)"""
        messages = self._consumer.consume(max_records, 0)
        if messages:
            return messages
        first = self._consumer.poll(timeout_ms / 1000.0)
        if first is None:
            return []
        return [first] + self._consumer.consume(max_records - 1, 0) if max_records > 1 else [first]

    @staticmethod
    def _consume_error(error: KafkaError) -> None:
        if error.fatal():
            raise _unavailable(KafkaException(error), "consume")
        log.warning("consume: %s", error)

    def positions(self):
        return {Partition(*key): offset for key, offset in self._consumed.items()}

    def commit(self, offsets):
        if not offsets:
            return
        self._commit([TopicPartition(t, p, o) for (t, p), o in offsets.items()], COMMIT_TIMEOUT_S)

    def probe(self, timeout_ms):
        try:
            self._consumer.list_topics(self._topics[0] if self._topics else None, timeout=timeout_ms / 1000.0)
        except KafkaException as exc:
            raise _unavailable(exc, "probe") from exc

    def assignment(self):
        return {Partition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def hold_intake(self, hold):
        """librdkafka drops what it had fetched for a paused partition and fetches again from the next record the
        consumer has not returned once it is resumed. It keeps a partition's pause across a rebalance (the assignment
        it comes back with is still paused), so a release resumes the whole assignment, not the partitions paused,
        and a partition assigned after a release is resumed as it comes (`subscribe`'s callback)."""
        if not hold and not self._holding:
            return
        assigned = self._consumer.assignment()
        if assigned:
            (self._consumer.pause if hold else self._consumer.resume)(assigned)
        self._holding = hold
        self._paused_once = self._paused_once or hold

    def lag(self):
        """Records behind the partition end, from the high-water marks librdkafka caches from fetches."""
        out = {}
        if self._assigned is None:
            self._assigned = self._consumer.assignment()
        for tp in self._assigned:
            key = Partition(tp.topic, tp.partition)
            try:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            position = self._consumed.get(key, self._start.get(key, low))  # nothing read yet: where reading starts
            if high >= 0 and position >= 0:
                out[key] = max(0, high - position)
        return out

    def forget(self, partitions: Iterable[Partition]) -> None:
        for key in partitions:
            self._consumed.pop(key, None)
            self._start.pop(key, None)

    def close(self):
        """Close the consumer first: leaving the group runs the revoke callback, which still produces. A commit still
        in flight (the broker stopped answering) is given its deadline once more; the consumer is not closed under
        it (that would free the handle the commit is using) and goes with the process."""
        try:
            if self._commit.settle(COMMIT_TIMEOUT_S):
                self._consumer.close()
            else:
                log.warning("closing with a commit still unanswered: its offsets may not be committed")
        finally:
            self._producer.close()


class BoundedCommit:
    """librdkafka's synchronous commit with a deadline: the commit runs on a helper thread and the caller waits at most
    `timeout_s`. A commit that outlives its deadline is an outage (BrokerUnavailable); it stays in flight and no
    other commit starts until it has finished, so commits still reach the broker in order and one at a time."""

    def __init__(self, consumer: Consumer):
        self._consumer = consumer
        self._in_flight: Optional[threading.Thread] = None
        self._error: Optional[KafkaException] = None

    def __call__(self, partitions: list, timeout_s: float) -> None:
        if self._in_flight is not None and self._in_flight.is_alive():
            raise BrokerUnavailable("commit: the previous commit is still unanswered", kind="_TIMED_OUT")
        self._error = None
        worker = threading.Thread(target=self._run, args=(partitions,), name="streamdet-commit", daemon=True)
        self._in_flight = worker
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise BrokerUnavailable(f"commit: no answer from the group coordinator within {timeout_s:g} s",
                                    kind="_TIMED_OUT")
        if self._error is not None:
            raise _unavailable(self._error, "commit") from self._error

    def settle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a commit in flight; True when none is left."""
        if self._in_flight is not None:
            self._in_flight.join(timeout_s)
        return self._in_flight is None or not self._in_flight.is_alive()

    def _run(self, partitions: list) -> None:
        try:
            self._consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            self._error = exc
