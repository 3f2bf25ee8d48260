"""Reading a topic outside any consumer group: the state changelog on restore, the alerts topic in the demo."""

from __future__ import annotations

import time
from typing import Iterable, Iterator, Optional

from kafka import KafkaConsumer, TopicPartition

from ..config import KafkaConfig
from .client import KafkaDeliveryError
from .connection import client_options


def _groupless_consumer(kafka: KafkaConfig, role: str, **options) -> KafkaConsumer:
    """A consumer outside any group (assigns partitions itself): reads, never commits."""
    return KafkaConsumer(group_id=None, enable_auto_commit=False, **options, **client_options(kafka, role))


class TopicTail:
    """Read one topic from its beginning with no consumer group (the demo prints the alerts topic with it)."""

    def __init__(self, kafka: KafkaConfig, topic: str):
        self.topic = topic
        self._consumer = _groupless_consumer(kafka, "tail", auto_offset_reset="earliest")
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


def read_to_end(kafka: KafkaConfig, topic: str, timeout_s: float = 60.0) -> Iterator[tuple[Optional[bytes], bytes]]:
    """Yield (key, value) of every record of `topic`, all partitions, from the beginning to the current end.

    No consumer group: used to restore state from a changelog topic. A missing topic yields nothing. KafkaDeliveryError
    when no record comes for `timeout_s` before the end (however long the whole read takes while records come).
    """
    for r in _records_to_end(kafka, topic, None, timeout_s):
        yield r.key, r.value


def read_partitions(kafka: KafkaConfig, topic: str, partitions: Iterable[int],
                    timeout_s: float = 60.0) -> Iterator[tuple[int, bytes]]:
    """Yield (partition, value) of every record of the given partitions of `topic`, from the beginning to the
    current end, in offset order per partition. No consumer group (the Alertmanager bridge re-learns open alerts)."""
    for r in _records_to_end(kafka, topic, set(partitions), timeout_s):
        yield r.partition, r.value


def _records_to_end(kafka: KafkaConfig, topic: str, only: Optional[set[int]], timeout_s: float):
    """Records of `topic` (the partitions in `only`, or all) from the beginning to the end offsets of now."""
    consumer = _groupless_consumer(kafka, "restore")
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
            batches = consumer.poll(timeout_ms=200)
            for tp, records in batches.items():
                yield from records
                if tp in end and consumer.position(tp) >= end[tp]:
                    del end[tp]
            if batches:  # progress: the deadline is for a broker that stops giving records, not for a long read
                deadline = time.monotonic() + timeout_s
        if end:
            raise KafkaDeliveryError(f"{topic}: no record for {timeout_s:.0f} s before the end of "
                                     + ", ".join(f"partition {tp.partition} (offset {end[tp]})" for tp in end))
    finally:
        consumer.close(autocommit=False)
