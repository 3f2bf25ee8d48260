"""Per-entity state checkpoints in a Kafka changelog topic (like a Kafka Streams state store).

The delivery checkpoints the entities touched since the previous commit, has the records acknowledged, and only
then commits offsets, so a committed offset is never ahead of a checkpoint. A checkpoint is a delta (the window's
new points, the threshold's new peaks, the small rest) or, when needed, a full snapshot: streamdet/changelog has
the encoding, the snapshot rule and the key scheme. On start and on partition assignment the changelog is read to
its end, snapshots and deltas are folded into the entities of the assigned partitions, and redelivered records the
restored state already holds are skipped (the ledger's skip-through): the scores that follow equal those of a run
that never stopped. Record sources are Kafka `Source`s here: a column of 4-element tuples (a window's sources)
comes back as Sources.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Collection, Iterable, Iterator, Optional

from ..changelog import ChangelogFold, ChangelogWriter, StateError
from ..changelog.codec import MAGIC, SNAPSHOT, Head, decode_legacy, decode_record
from ..changelog.writer import encode_snapshot
from ..io.readers import read_to_end
from ..types import Source

log = logging.getLogger(__name__)

RESTORE_TIMEOUT_S = 60.0

__all__ = ["Checkpointer", "RestoreInterrupted", "StateError", "decode_checkpoint", "encode_checkpoint"]


class RestoreInterrupted(Exception):
    """A stop came while the changelog was being read: nothing was restored, the partitions are left unserved."""


def _until_stopped(records: Iterable, stopping: Callable[[], bool]) -> Iterator:
    for n, record in enumerate(records):
        if n % 1024 == 0 and stopping():
            raise RestoreInterrupted()
        yield record


def encode_checkpoint(entity: str, state: dict, last_source: Source, model_sha256: str) -> bytes:
    """A full checkpoint (a snapshot record of generation 1) of one entity's state."""
    return encode_snapshot(Head(SNAPSHOT, 1, 0, 0), entity, state, last_source, model_sha256)


def decode_checkpoint(raw: bytes) -> dict:
    """A snapshot record (or a format-1 JSON checkpoint) -> {"entity", "model_sha256", "last_source", "state"}."""
    if raw[:len(MAGIC)] != MAGIC:
        message = decode_legacy(raw)
    else:
        head, message = decode_record(raw)
        if head.kind != SNAPSHOT:
            raise StateError(f"delta {head.index} is not a full checkpoint")
    try:
        message["last_source"] = Source(*message["last_source"])
    except TypeError as exc:
        raise StateError(f"bad last_source {message['last_source']!r} ({exc})") from None
    return message


class Checkpointer:
    """Writes checkpoints through the daemon's producer and restores them from the changelog topic."""

    def __init__(self, kafka, client, writer: Optional[ChangelogWriter] = None, metrics=None):
        self.kafka = kafka  # the kafka config section, pointed at the running broker
        self.topic = kafka.state_topic
        self.client = client
        self.writer = writer or ChangelogWriter()
        self.metrics = metrics  # io.metrics.Metrics, or None
        self.written = 0  # records produced (snapshots, deltas, tombstones)
        self.skipped = 0  # changelog records a restore skipped as corrupt, truncated or out of order
        self._thresholds: Any = None  # the pipeline's ThresholdBank the chains were built on

    def write(self, pipeline, ledger, entities: Iterable[str]) -> int:
        """Produce each entity's checkpoint records (not flushed: the delivery flushes before committing)."""
        self._follow_model(pipeline)
        n = sum(self._write_one(pipeline, ledger, entity) for entity in entities)
        self.written += n
        return n

    def write_slice(self, pipeline, ledger, entities: list[str], start: int, deadline: float,
                    busy: Optional[Collection[str]] = None) -> int:
        """`write` of entities[start:] until `time.perf_counter()` passes `deadline` (after at least one entity);
        returns the index of the first entity not written. A checkpoint round (delivery.py) calls it between the
        loop's polls, so that thousands of checkpoints never stop scoring for seconds at a time. With `busy` (the
        pipeline's unscored_entities, taken after the last flush) it stops before an entity of that set and writes
        the others without waiting for the model; without it every state waits for the batches in flight."""
        self._follow_model(pipeline)
        end, n = start, 0
        while end < len(entities) and (busy is None or entities[end] not in busy):
            n += self._write_one(pipeline, ledger, entities[end], settled=busy is not None)
            end += 1
            if time.perf_counter() >= deadline:
                break
        self.written += n
        return end

    def _follow_model(self, pipeline) -> None:
        if pipeline.thresholds is not self._thresholds:  # a model reload restarted every threshold: snapshots
            if self._thresholds is not None:
                self.writer.restart_all()
            self._thresholds = pipeline.thresholds

    def _write_one(self, pipeline, ledger, entity: str, settled: bool = False) -> int:
        last = ledger.held.get(entity)
        if last is None or not pipeline.holds(entity):
            return 0
        state = pipeline.state_dict(entity, settled=settled)
        return self._produce(self.writer.records(entity, state, last, pipeline.model_sha256_of(entity)))

    def erase(self, entities: Iterable[str]) -> int:
        """Tombstone the checkpoints of entities the pipeline dropped for good (not flushed: the next commit
        round's flush carries them, as it does checkpoints)."""
        n = sum(self._produce(self.writer.erase(entity)) for entity in entities)
        self.written += n
        return n

    def _produce(self, records: list[tuple[bytes, Any]]) -> int:
        """Produce changelog records (value None: a tombstone), counted by kind and bytes."""
        for key, value in records:
            self.client.produce(self.topic, key, value)
            if self.metrics is not None:
                kind = "tombstone" if value is None else "delta" if b"\x00" in key else "snapshot"
                self.metrics.checkpointed(kind, len(key) + len(value or b""))
        return len(records)

    def restore(self, pipeline, ledger, partitions: set, stopping: Optional[Callable[[], bool]] = None) -> int:
        """Restore every entity whose records come from `partitions`; returns how many. RestoreInterrupted when
        `stopping()` turns true during the read (a SIGTERM should not wait minutes for a large changelog)."""
        records = read_to_end(self.kafka, self.topic, RESTORE_TIMEOUT_S)
        return self.restore_from(pipeline, ledger, partitions,
                                 records if stopping is None else _until_stopped(records, stopping))

    def restore_from(self, pipeline, ledger, partitions: set, records: Iterable[tuple[Any, Any]]) -> int:
        """`restore` from (key, value) changelog records in log order."""
        fold = ChangelogFold()
        for key, value in records:
            fold.add(key, value)
        self.writer.keep_only(pipeline.holds)
        wanted = {tuple(p) for p in partitions}
        restored = 0
        for entity in sorted(fold.entities()):
            found = fold.restore(entity, lambda source: tuple(source[:2]) in wanted)
            if found is not None and self._load(pipeline, ledger, entity, found):
                restored += 1
            if found is not None or not self.writer.has_chain(entity):
                self.writer.resume(entity, fold.history(entity))  # its next checkpoint: a snapshot above the log's
        self.skipped += fold.skipped
        if self.metrics is not None and fold.skipped:
            self.metrics.changelog_skipped(fold.skipped)
        log.info("restored %d entities from %s (%d records, %d skipped)", restored, self.topic, fold.records,
                 fold.skipped)
        return restored

    @staticmethod
    def _load(pipeline, ledger, entity: str, found) -> bool:
        if found.model_sha256 != pipeline.model_sha256_of(entity):
            log.warning("checkpoint of %s is for another model; starting it cold", entity, extra={"entity": entity})
            return False
        try:
            through = Source(*found.last_source)
            pipeline.load_state(entity, found.state)
        except Exception as exc:  # a checkpoint from an incompatible config: start cold, never crash
            log.warning("checkpoint of %s rejected (%s); starting it cold", entity, exc, extra={"entity": entity})
            pipeline.forget([entity])  # a part loaded before the refusal (a window) would take redelivered records
            return False
        ledger.restored(entity, through)
        return True
