"""Which changelog records one entity's checkpoint becomes: a delta when possible, a snapshot when needed.

Keys (the reasons are in streamdet/changelog/__init__.py):
    snapshot  b"<entity>"            the latest full state of the entity (the key format 1 used)
    delta     b"<entity>\\x00<n>"     the n-th delta after that snapshot, n = 1, 2, ... (reused by every chain)

Snapshot rule, per entity: a snapshot when there is no chain to extend (the first checkpoint, after a restore or a
cold start, after a model change), when the state is not the previous one plus appends (`delta.diff` says so: the
window was evicted and came back, a reload reset the threshold), after `max_deltas` deltas (jittered per entity by
up to a quarter, so that entities that started together do not all snapshot at the same commit), or when the
deltas since the last snapshot, this one included, would add up to more than `size_ratio` snapshots (a delta larger
than a snapshot is never written). The last two bound what a restore reads per entity: one snapshot and at most
min(max_deltas, size_ratio snapshots' worth of) deltas.
"""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .codec import DELTA, SNAPSHOT, Head, encode_record
from .delta import Mark, diff, mark_of

MAX_DELTAS = 48  # 4 minutes of deltas at the default 5 s commit interval
SIZE_RATIO = 2.0  # deltas since a snapshot add up to at most this many snapshot sizes


def snapshot_key(entity: str) -> bytes:
    return entity.encode("utf-8")


def delta_key(entity: str, index: int) -> bytes:
    return f"{entity}\x00{index}".encode("utf-8")


def parse_key(key: bytes) -> tuple[str, int]:
    """(entity, delta index), index 0 for a snapshot key. Entities are printable, so they never contain NUL."""
    text = key.decode("utf-8")
    entity, sep, index = text.rpartition("\x00")
    if not sep:
        return text, 0
    if not index.isdigit() or int(index) < 1:
        raise ValueError(f"bad delta index {index!r}")
    return entity, int(index)


def encode_snapshot(head: Head, entity: str, state: dict, last_source: Any, model_sha256: str) -> bytes:
    return encode_record(head, {"entity": entity, "model_sha256": model_sha256, "written": time.time(),
                                "last_source": tuple(last_source), "state": state})


@dataclass(frozen=True)
class History:
    """What the changelog holds for an entity this writer has no chain of: its next snapshot continues after it."""

    seq: int = 0  # highest snapshot generation seen
    dirty: tuple = ()  # delta slots holding undecodable records: the next snapshot overwrites them with tombstones


@dataclass
class _Chain:
    seq: int
    chain: int
    deltas: int
    snapshot_bytes: int
    delta_bytes: int
    mark: Optional[Mark]  # None: the state had no window (only rows being assembled), so no delta applies to it
    model: str
    last_delta: int = 0  # bytes of the latest delta: when the next like-sized one cannot fit, no delta is encoded


class ChangelogWriter:
    """Per entity: the chain being extended (its mark, sizes, delta count) and the records of each checkpoint."""

    def __init__(self, max_deltas: int = MAX_DELTAS, size_ratio: float = SIZE_RATIO,
                 rng: Optional[random.Random] = None):
        self.max_deltas = max_deltas
        self.size_ratio = size_ratio
        self._rng = rng or random.Random()
        self._chains: dict[str, _Chain] = {}
        self._history: dict[str, History] = {}
        self.snapshots = 0
        self.deltas = 0
        self.bytes = 0

    def records(self, entity: str, state: dict, last_source: Any, model_sha256: str) -> list[tuple[bytes, Any]]:
        """The (key, value) records for the entity's checkpoint (value None: a tombstone)."""
        chain = self._chains.get(entity)
        if chain is not None and chain.mark is not None and chain.model == model_sha256 and \
                chain.deltas < self._limit(entity) and \
                chain.delta_bytes + chain.last_delta <= self.size_ratio * chain.snapshot_bytes:  # a delta may fit
            change = diff(chain.mark, state)
            if change is not None:
                head = Head(DELTA, chain.seq, chain.chain, chain.deltas + 1)
                value = encode_record(head, {"last_source": tuple(last_source), "delta": change})
                size = len(value)
                if size < chain.snapshot_bytes and chain.delta_bytes + size <= self.size_ratio * chain.snapshot_bytes:
                    chain.deltas += 1
                    chain.delta_bytes += size
                    chain.last_delta = size
                    chain.mark = mark_of(state)
                    self.deltas += 1
                    self.bytes += size
                    return [(delta_key(entity, head.index), value)]
        return self._snapshot(entity, state, last_source, model_sha256, chain)

    def _snapshot(self, entity: str, state: dict, last_source: Any, model_sha256: str,
                  chain: Optional[_Chain]) -> list[tuple[bytes, Any]]:
        history = self._history.pop(entity, History())
        seq = max(chain.seq if chain else 0, history.seq) + 1
        head = Head(SNAPSHOT, seq, self._rng.getrandbits(32), 0)
        value = encode_snapshot(head, entity, state, last_source, model_sha256)
        self._chains[entity] = _Chain(seq, head.chain, 0, len(value), 0, mark_of(state), model_sha256)
        self.snapshots += 1
        self.bytes += len(value)
        return [(snapshot_key(entity), value)] + [(delta_key(entity, index), None) for index in history.dirty]

    def erase(self, entity: str) -> list[tuple[bytes, Any]]:
        """Tombstones for every key the entity may hold (its snapshot and each delta slot up to max_deltas), and
        its chain forgotten: an entity that is gone leaves nothing for a restore or for compaction to keep. Should
        it come back, its first checkpoint is a fresh chain on empty slots."""
        self._chains.pop(entity, None)
        self._history.pop(entity, None)
        return [(snapshot_key(entity), None)] + [(delta_key(entity, i), None) for i in range(1, self.max_deltas + 1)]

    def _limit(self, entity: str) -> int:
        """max_deltas less a per-entity jitter of up to a quarter (stable: crc32 of the name)."""
        return self.max_deltas - zlib.crc32(entity.encode("utf-8")) % (self.max_deltas // 4 + 1)

    def resume(self, entity: str, history: History) -> None:
        """The next checkpoint of `entity` is a snapshot that supersedes what the changelog holds (after a restore,
        or for an entity the changelog holds but that starts cold)."""
        self._chains.pop(entity, None)
        self._history[entity] = history

    def restart_all(self) -> None:
        """Every entity's next checkpoint is a snapshot (the pipeline's thresholds were replaced by a reload)."""
        for entity, chain in self._chains.items():
            self._history[entity] = History(chain.seq)
        self._chains.clear()

    def has_chain(self, entity: str) -> bool:
        return entity in self._chains

    def keep_only(self, held: Callable[[str], bool]) -> None:
        """Forget the chains and histories of entities not `held` (before a restore learns the log's histories). An
        entity that left (its partition moved away) and comes back must not extend the chain it had here: its
        other owner wrote newer generations meanwhile, or erased it."""
        for entity in [e for e in {*self._chains, *self._history} if not held(e)]:
            self.forget(entity)

    def forget(self, entity: str) -> None:
        """The entity moved to another instance: its chain there starts with a snapshot."""
        self._chains.pop(entity, None)
        self._history.pop(entity, None)
