"""StreamClient over kafka-python (`kafka.client: kafka-python`): for hosts where librdkafka's wheel is unavailable.

kafka-python parses fetched records in Python on the calling thread, so it is slower than io/confluent.py; it is the
library the producer, the topic admin and the groupless readers use anyway.
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from ..config import KafkaConfig
from ..types import Partition, Source
from .client import PartitionsCallback, ProducingClient
from .connection import client_options
from .producer import Producer

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_MS = 5000
_new = tuple.__new__  # Source(...) without NamedTuple's keyword handling: one per record on the hot path


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
            callback([Partition(tp.topic, tp.partition) for tp in partitions])
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

    def __init__(self, kafka: KafkaConfig):
        self._consumer = KafkaConsumer(
            group_id=kafka.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms, heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_records=kafka.max_poll_records, fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            **client_options(kafka))
        self._producer = Producer(kafka)
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
            items += [(r.value, _new(Source, (topic, partition, r.offset, r.timestamp))) for r in records]
            self._consumed[Partition(topic, partition)] = records[-1].offset + 1
        return items

    def positions(self):
        return {Partition(*key): offset for key, offset in self._consumed.items()}

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
        return {Partition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def hold_intake(self, hold):
        paused = self._consumer.paused()
        if hold:
            unpaused = self._consumer.assignment() - paused
            if unpaused:
                self._consumer.pause(*unpaused)
        elif paused:
            self._consumer.resume(*paused)

    def lag(self):
        """Records behind the partition end, from the high-water marks of the latest fetches (no extra request)."""
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            key = Partition(tp.topic, tp.partition)
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
        for key in partitions:
            self._consumed.pop(key, None)

    def close(self):
        """Close the consumer first: leaving the group may run the revoke callback, which still produces. Its own
        deadline is the request timeout (30 s), which a frozen coordinator used up: bounded like a commit."""
        try:
            self._consumer.close(autocommit=False, timeout_ms=COMMIT_TIMEOUT_MS)
        finally:
            self._producer.close()
