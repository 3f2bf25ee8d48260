"""Kafka adapter: with io/confluent.py, the only modules that import a Kafka client (kafka-python here).

The daemon talks to `StreamClient`, a small interface (poll a batch, produce, flush, commit, rebalance callbacks, lag,
topic creation), with two implementations picked by `kafka.client` (`make_client`): KafkaPythonClient here, and
ConfluentClient (a librdkafka consumer) in io/confluent.py. Offsets are committed manually and only after the
producer has flushed: alerts are delivered at least once (DESIGN.md §5).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterable, Optional

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from ..errors import ConfigError, StreamdetError

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)
Source = tuple[str, int, int, int]  # (topic, partition, offset, timestamp_ms)
PartitionsCallback = Callable[[list[Partition]], None]


COMMIT_TIMEOUT_MS = 5000
FLUSH_TIMEOUT_S = 10.0  # the daemon's flush: long enough for a busy broker, short enough to notice an outage


class KafkaDeliveryError(StreamdetError):
    """The broker did not acknowledge produced records; their offsets must not be committed."""


class BrokerUnavailable(StreamdetError):
    """A client other than kafka-python could not reach the brokers (its own exception, converted by its adapter)."""

    def __init__(self, message: str, kind: str = "unavailable"):
        super().__init__(message)
        self.kind = kind  # the client's error name, a bounded label


def error_kind(exc: BaseException) -> str | None:
    """A bounded label for a Kafka failure (for streamdet_kafka_errors_total), or None if it is not one."""
    if isinstance(exc, KafkaDeliveryError):
        return "delivery"
    if isinstance(exc, BrokerUnavailable):
        return exc.kind
    if isinstance(exc, KafkaError):
        return type(exc).__name__
    return None


def is_outage(exc: BaseException) -> bool:
    """Errors that mean "the broker is not answering": retry them; anything else is a bug and stops the daemon."""
    kinds = (KafkaError, KafkaDeliveryError, BrokerUnavailable, ConnectionError, TimeoutError)
    return isinstance(exc, kinds) or isinstance(exc.__cause__, kinds)


def resolve_bootstrap(cfg, bootstrap: Optional[str] = None) -> str:
    """The bootstrap servers to use; "embedded" must have been replaced by a running broker's address."""
    servers = bootstrap or cfg.kafka.bootstrap_servers
    if servers == "embedded":
        raise ConfigError("kafka.bootstrap_servers: 'embedded' needs a running EmbeddedBroker (pass its bootstrap)")
    return servers


def security_options(kafka_cfg) -> dict:
    """kafka-python security keyword arguments from `kafka.security`; the password comes from the named env var."""
    sec = kafka_cfg.security
    opts: dict = {"security_protocol": sec.protocol}
    if sec.protocol.startswith("SASL"):
        if not sec.sasl_mechanism:
            raise ConfigError(f"kafka.security.sasl_mechanism: required with protocol {sec.protocol}")
        opts["sasl_mechanism"] = sec.sasl_mechanism
        opts["sasl_plain_username"] = sec.sasl_username
        if sec.sasl_password_env:
            if sec.sasl_password_env not in os.environ:
                raise ConfigError(f"kafka.security.sasl_password_env: environment variable "
                                  f"{sec.sasl_password_env} is not set")
            opts["sasl_plain_password"] = os.environ[sec.sasl_password_env]
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, key):
            opts[key] = getattr(sec, key)
    return opts


def accepts_connections(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when some bootstrap server accepts a TCP connection: a cheap check before building clients, whose
    constructors would otherwise block for tens of seconds retrying an absent broker."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def cluster_reachable(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """True when a client can bootstrap against `bootstrap` and fetch the topic list."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def _admin(cfg, bootstrap: Optional[str]) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=resolve_bootstrap(cfg, bootstrap), client_id=cfg.kafka.client_id,
                            **security_options(cfg.kafka))


def _groupless_consumer(cfg, bootstrap: Optional[str], role: str, **options) -> KafkaConsumer:
    """A consumer outside any group (assigns partitions itself): reads, never commits."""
    return KafkaConsumer(bootstrap_servers=resolve_bootstrap(cfg, bootstrap), group_id=None, enable_auto_commit=False,
                         client_id=f"{cfg.kafka.client_id}-{role}", **options, **security_options(cfg.kafka))


def ensure_topics(cfg, topics: Iterable[str], bootstrap: Optional[str] = None, compacted: bool = False) -> list[str]:
    """Create the missing topics with `kafka.partitions` partitions; return the names created.

    compacted=True (the state changelog) asks for cleanup.policy=compact, and falls back to a plain topic if the
    broker refuses the setting."""
    admin = _admin(cfg, bootstrap)
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        created = [name for name in missing if _create(admin, name, cfg.kafka.partitions, compacted)]
        if created:
            log.info("created topics %s partitions=%d", ",".join(created), cfg.kafka.partitions)
        return created
    finally:
        admin.close()


def _create(admin: KafkaAdminClient, name: str, partitions: int, compacted: bool) -> bool:
    """False when another instance created it first."""
    configs = {"cleanup.policy": "compact"} if compacted else {}
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        if not compacted:
            raise
        log.warning("broker refused a compacted %s (%s); creating it plain", name, exc)
        return _create(admin, name, partitions, compacted=False)
    return True


def ensure_changelog(cfg, topic: str, bootstrap: Optional[str] = None) -> None:
    """Create the state changelog topic compacted (latest checkpoint per entity kept), or plain if refused."""
    ensure_topics(cfg, [topic], bootstrap, compacted=True)


class Producer:
    """Keyed produce with acks=all. `flush` raises KafkaDeliveryError if a record is not acknowledged, and keeps
    every such record: the next flush sends the failed ones again (at-least-once; consumers dedupe on alert_id)."""

    def __init__(self, cfg, bootstrap: Optional[str] = None):
        self._producer = KafkaProducer(
            bootstrap_servers=resolve_bootstrap(cfg, bootstrap), client_id=cfg.kafka.client_id, acks="all",
            retries=5, linger_ms=5, **security_options(cfg.kafka))
        self._pending: list = []  # (topic, key, value, future)

    def produce(self, topic: str, key: Optional[bytes], value: bytes) -> None:
        self._pending.append((topic, key, value, self._producer.send(topic, key=key, value=value)))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every produced record is acknowledged; return how many were."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        self._producer.flush(timeout=timeout_s)
        kept, first = [], None
        for topic, key, value, future in pending:
            if not future.is_done:
                kept.append((topic, key, value, future))
            elif future.failed():
                first = first or future.exception
                kept.append((topic, key, value, self._producer.send(topic, key=key, value=value)))
        self._pending = kept + self._pending
        if kept:
            raise KafkaDeliveryError(f"{len(kept)} of {len(pending)} records not acknowledged yet "
                                     f"({first or 'timed out'}); kept for the next flush")
        return len(pending)

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout=timeout_s)


def make_producer(cfg, bootstrap: Optional[str] = None) -> Producer:
    """A Producer for cfg.kafka (used by the replay command, the daemon, tests and the benchmark)."""
    return Producer(cfg, bootstrap)


class TopicTail:
    """Read one topic from its beginning with no consumer group (the demo prints the alerts topic with it)."""

    def __init__(self, cfg, topic: str, bootstrap: Optional[str] = None):
        self.topic = topic
        self._consumer = _groupless_consumer(cfg, bootstrap, "tail", auto_offset_reset="earliest")
        self._assigned = False

    def poll(self, timeout_ms: int = 200) -> list[bytes]:
        """Values of the records that arrived since the last call (assigns all partitions once they exist)."""
        if not self._assigned:
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                return []
            self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
            self._assigned = True
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        return [r.value for records in batches.values() for r in records]

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> "TopicTail":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StreamClient:
    """What the daemon needs from Kafka. Implementations: KafkaPythonClient, confluent.ConfluentClient."""

    def subscribe(self, topics: list[str], on_assign: PartitionsCallback, on_revoke: PartitionsCallback) -> None:
        raise NotImplementedError

    def poll(self, timeout_ms: int, max_records: int) -> list[tuple[bytes, Source]]:
        raise NotImplementedError

    def positions(self) -> dict[Partition, int]:
        """Per partition, the offset after the last record poll() has returned (until forget()): where the daemon
        commits from, kept once, here."""
        raise NotImplementedError

    def produce(self, topic: str, key: Optional[bytes], value: bytes) -> None:
        raise NotImplementedError

    def flush(self, timeout_s: float = 30.0) -> int:
        raise NotImplementedError

    def commit(self, offsets: dict[Partition, int]) -> None:
        raise NotImplementedError

    def probe(self, timeout_ms: int) -> None:
        """Raise a KafkaError if the broker does not answer within timeout_ms (outage detection)."""
        raise NotImplementedError

    def unacknowledged(self) -> int:
        """Produced records not acknowledged yet (kept for the next flush)."""
        raise NotImplementedError

    def assignment(self) -> set[Partition]:
        raise NotImplementedError

    def lag(self) -> dict[Partition, int]:
        raise NotImplementedError

    def forget(self, partitions: Iterable[Partition]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ProducingClient(StreamClient):
    """The producing half both clients share: kafka-python's acknowledged Producer (`self._producer`)."""

    _producer: Producer

    def produce(self, topic, key, value):
        self._producer.produce(topic, key, value)

    def flush(self, timeout_s=FLUSH_TIMEOUT_S):
        return self._producer.flush(timeout_s)

    def unacknowledged(self):
        return self._producer.unacknowledged


class _Listener(AsyncConsumerRebalanceListener):
    """Adapts kafka-python's rebalance listener to plain (topic, partition) callbacks.

    kafka-python 3 runs listeners on its IO loop, where a blocking commit is refused; the daemon's callbacks are
    synchronous, so a commit they ask for is deferred and awaited here (asynchronously) before the rebalance goes on.
    """

    def __init__(self, client: "KafkaPythonClient", on_assign: PartitionsCallback, on_revoke: PartitionsCallback):
        self._client, self._on_assign, self._on_revoke = client, on_assign, on_revoke

    async def on_partitions_revoked(self, revoked):
        await self._run(self._on_revoke, revoked)

    async def on_partitions_assigned(self, assigned):
        await self._run(self._on_assign, assigned)

    async def _run(self, callback: PartitionsCallback, partitions) -> None:
        self._client.in_rebalance = True
        try:
            callback([(tp.topic, tp.partition) for tp in partitions])
        finally:
            self._client.in_rebalance = False
        offsets, self._client.deferred_commit = self._client.deferred_commit, {}
        if offsets:
            try:
                await self._client.commit_async(offsets)
            except Exception:  # not committed: Kafka redelivers, checkpoints make the redelivered records skip
                log.exception("commit during the rebalance failed")


class KafkaPythonClient(ProducingClient):
    """StreamClient over kafka-python: one consumer (manual commits) and one producer (acks=all)."""

    def __init__(self, cfg, bootstrap: Optional[str] = None):
        k = cfg.kafka
        self._consumer = KafkaConsumer(
            bootstrap_servers=resolve_bootstrap(cfg, bootstrap), group_id=k.group_id, client_id=k.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms, max_poll_records=k.max_poll_records,
            **security_options(k))
        self._producer = Producer(cfg, bootstrap)
        self._consumed: dict[Partition, int] = {}  # next offset to read, per partition
        self.in_rebalance = False
        self.deferred_commit: dict[Partition, int] = {}

    def subscribe(self, topics, on_assign, on_revoke):
        self._consumer.subscribe(topics=list(topics), listener=_Listener(self, on_assign, on_revoke))

    def poll(self, timeout_ms, max_records):
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        items: list[tuple[bytes, Source]] = []
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            items += [(r.value, (topic, partition, r.offset, r.timestamp)) for r in records]
            self._consumed[(topic, partition)] = records[-1].offset + 1
        return items

    def positions(self):
        return dict(self._consumed)

    def commit(self, offsets):
        if not offsets:
            return
        if self.in_rebalance:  # on the IO loop: the listener awaits it once the daemon's callback returns
            self.deferred_commit.update(offsets)
            return
        self._consumer.commit(self._offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS)

    def commit_async(self, offsets):
        return self._consumer.commit_async(self._offsets(offsets))

    @staticmethod
    def _offsets(offsets):
        return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}

    def probe(self, timeout_ms):
        assigned = sorted(self._consumer.assignment())
        if assigned:
            self._consumer.end_offsets(assigned[:1], timeout_ms=timeout_ms)

    def assignment(self):
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lag(self):
        """Records behind the partition end, from the high-water marks of the latest fetches (no extra request)."""
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            key = (tp.topic, tp.partition)
            position = self._consumed.get(key)
            if position is None:  # nothing read here yet (empty, or everything before the committed offset)
                position = self._fetch_position(tp)
            if high is not None and position is not None:
                out[key] = max(0, high - position)
        return out

    def _fetch_position(self, tp) -> Optional[int]:
        """The fetcher's next offset without a network round trip (KafkaConsumer.position() may block on the
        coordinator); read from kafka-python's subscription state, None when it has no valid position yet."""
        state = getattr(self._consumer, "_subscription", None)
        if state is None or not state.has_valid_position(tp):
            return None
        position = state.position(tp)
        return getattr(position, "offset", position)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop the consumed position of revoked partitions (their lag belongs to another member now)."""
        for key in partitions:
            self._consumed.pop(key, None)

    def close(self):
        """Close the consumer first: leaving the group may run the revoke callback, which still produces."""
        try:
            self._consumer.close(autocommit=False)
        finally:
            self._producer.close()


def make_client(cfg, bootstrap: Optional[str] = None) -> StreamClient:
    """The StreamClient that `kafka.client` names (confluent-kafka, the default, is imported only when asked for, so
    `kafka.client: kafka-python` runs where librdkafka's wheel cannot be installed)."""
    if cfg.kafka.client == "confluent":
        try:
            from .confluent import ConfluentClient
        except ImportError as exc:
            raise ConfigError("kafka.client: 'confluent' (the default) needs the confluent-kafka package: "
                              "pip install confluent-kafka, or set kafka.client: kafka-python") from exc
        return ConfluentClient(cfg, bootstrap)
    return KafkaPythonClient(cfg, bootstrap)


def read_to_end(cfg, topic: str, bootstrap: Optional[str] = None, timeout_s: float = 60.0):
    """Yield (key, value) of every record of `topic`, all partitions, from the beginning to the current end.

    No consumer group: used to restore state from a changelog topic. A missing topic yields nothing.
    """
    for r in _records_to_end(cfg, topic, None, bootstrap, timeout_s):
        yield r.key, r.value


def read_partitions(cfg, topic: str, partitions: Iterable[int], bootstrap: Optional[str] = None,
                    timeout_s: float = 60.0):
    """Yield (partition, value) of every record of the given partitions of `topic`, from the beginning to the
    current end, in offset order per partition. No consumer group (the Alertmanager bridge re-learns open alerts)."""
    for r in _records_to_end(cfg, topic, set(partitions), bootstrap, timeout_s):
        yield r.partition, r.value


def _records_to_end(cfg, topic: str, only: Optional[set[int]], bootstrap: Optional[str], timeout_s: float):
    """Records of `topic` (the partitions in `only`, or all) from the beginning to the end offsets of now."""
    consumer = _groupless_consumer(cfg, bootstrap, "restore")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in sorted(partitions) if only is None or p in only]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = {tp: off for tp, off in consumer.end_offsets(tps).items() if off > 0}
        deadline = time.monotonic() + timeout_s
        while end and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                yield from records
                if tp in end and consumer.position(tp) >= end[tp]:
                    del end[tp]
        if end:
            raise KafkaDeliveryError(f"{topic}: could not read to the end within {timeout_s:.0f} s")
    finally:
        consumer.close(autocommit=False)
