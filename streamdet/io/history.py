"""The metrics topic's history, for `streamdet train --from-topic [--since DURATION]` (data/topic.py assembles it).

The history is read from the start (or from `since_s` ago) up to the end offsets seen when the read started, in a
consumer group of its own that never commits.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Optional

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from ..config import KafkaConfig
from ..errors import DataError
from ..types import Source
from .confluent import librdkafka_options

log = logging.getLogger(__name__)

READ_IDLE_S = 10.0  # no message for this long before the end offsets: the broker is stuck, stop
TAIL_IDLE_S = 1.0  # past the end offset, a partition is done after this long without an older message


def read_history(kafka: KafkaConfig, since_s: Optional[float] = None, limit: int = 0,
                 until: Optional[float] = None) -> Iterator[list[tuple[bytes, Source]]]:
    """Batches of (value, Source) from the metrics topic, oldest first per partition: the messages written before
    the read started (and, with since_s, not before since_s ago; with `until`, epoch seconds, not after it).

    The end offsets and offsets_for_times steer the read; message timestamps decide, because the embedded broker
    (Tansu) reports a high watermark inside the last batch and answers offsets_for_times with 0: past the end
    offset a partition is read on until a newer message or TAIL_IDLE_S of silence, and older messages than
    since_s are skipped."""
    topic = kafka.metrics_topic
    options = {**librdkafka_options(kafka), "group.id": f"{kafka.group_id}-train-{time.time_ns()}"}
    consumer = Consumer(options)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise DataError(f"kafka.metrics_topic {topic!r}: topic not found on {kafka.bootstrap_servers}")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
        starts = _start_offsets(consumer, topic, ends, since_s)
        remaining = {p for p in ends if starts[p] < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in remaining])
        oldest_ms = int((time.time() - since_s) * 1000) if since_s is not None else -1
        newest_ms = int(until * 1000) if until is not None else None
        yield from _consume(consumer, topic, ends, remaining, limit, int(time.time() * 1000), oldest_ms, newest_ms)
    finally:
        consumer.close()


def _start_offsets(consumer, topic: str, ends: dict, since_s: Optional[float]) -> dict:
    if since_s is None:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in ends}
    wanted = int((time.time() - since_s) * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, wanted) for p in ends], timeout=10)
    return {tp.partition: (ends[tp.partition] if tp.offset < 0 else tp.offset) if tp.offset != OFFSET_BEGINNING
            else 0 for tp in found}


def _consume(consumer, topic: str, ends: dict, remaining: set, limit: int, started_ms: int,
             oldest_ms: int, newest_ms: Optional[int] = None) -> Iterator[list]:
    read, heard = 0, {p: time.monotonic() for p in remaining}
    while remaining and (not limit or read < limit):
        batch = []
        for msg in consumer.consume(5000, timeout=0.2):
            p = msg.partition()
            if msg.error() is not None or p not in remaining:
                continue
            stamp = msg.timestamp()[1]
            if stamp > started_ms and msg.offset() >= ends[p] - 1:
                remaining.discard(p)  # written after the read started: the history of p is complete
                continue
            heard[p] = time.monotonic()
            if stamp >= oldest_ms and (newest_ms is None or stamp <= newest_ms):
                batch.append((msg.value(), Source(topic, p, msg.offset(), stamp)))
        if batch:
            read += len(batch)
            yield batch
        now = time.monotonic()
        for p in list(remaining):
            position = consumer.position([TopicPartition(topic, p)])[0].offset
            if position >= ends[p] and now - heard[p] > TAIL_IDLE_S:
                remaining.discard(p)
            elif now - heard[p] > READ_IDLE_S:
                raise DataError(f"{topic}[{p}]: no messages for {READ_IDLE_S:.0f} s before its end offset {ends[p]}")
    if limit and read >= limit:
        log.warning("train from topic: stopped at %d messages (--limit)", read)


def start_group_at(kafka: KafkaConfig, offsets: dict[int, int]) -> None:
    """Commit `offsets` (partition -> next offset) of the metrics topic for kafka.group_id, so that a daemon of
    that group starts there (the live demo: score the live stream, not the baseline it was trained on)."""
    consumer = Consumer({**librdkafka_options(kafka), "group.id": kafka.group_id})
    try:
        consumer.commit(offsets=[TopicPartition(kafka.metrics_topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()
