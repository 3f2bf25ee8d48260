"""Restore: fold a changelog (snapshots, deltas, tombstones, in any compaction state) into one state per entity.

Records are taken in log order. Per key only the latest record counts (what compaction would keep), so a compacted
and an uncompacted log fold to the same states. Per entity, the latest snapshot starts the fold and the deltas of
its chain (same generation and chain id, indices 1..m without a gap) are applied in index order; deltas of older
chains are stale and ignored. Format-1 JSON checkpoints (before deltas) are snapshots of generation 0.

Bad input never crashes a restore and never yields a wrong state: a corrupt or truncated record (CRC, zlib, JSON,
a header that disagrees with its key), a gap in a chain, a delta of a newer generation than the snapshot (written
out of order), or a delta that does not start where the state ends is skipped with one log line and counted in
`skipped`; its entity starts cold (`cold`), and the writer's next snapshot of it supersedes the broken chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .codec import MAGIC, SNAPSHOT, Head, StateError, decode_legacy, decode_record, read_head
from .delta import DeltaError, apply
from .writer import History, parse_key

log = logging.getLogger(__name__)

_CORRUPT = object()  # a slot whose latest record could not be read


class _Unreadable(StateError):
    """The chain needs a record that was already reported (and counted) as unreadable when it was read."""


@dataclass
class Restored:
    state: dict
    last_source: tuple
    model_sha256: str


@dataclass
class _Slot:
    head: Head
    raw: Any  # the record's bytes, or a decoded format-1 message


class ChangelogFold:
    def __init__(self):
        self._snapshots: dict[str, Any] = {}  # entity -> _Slot | _CORRUPT
        self._deltas: dict[str, dict[int, Any]] = {}  # entity -> {index: _Slot | _CORRUPT}
        self._seq: dict[str, int] = {}  # entity -> highest generation seen in any record
        self.records = 0
        self.skipped = 0  # bad records (and broken chains) skipped, each logged once
        self.cold: list[str] = []  # entities whose chain was broken

    def add(self, key: Optional[bytes], value: Optional[bytes]) -> None:
        """One changelog record, in log order (value None: a tombstone)."""
        self.records += 1
        try:
            entity, index = parse_key(key)
        except (AttributeError, UnicodeDecodeError, ValueError) as exc:
            self._skip(f"a record with key {key!r} ({exc})")
            return
        slots = self._snapshots if index == 0 else self._deltas.setdefault(entity, {})
        slot_key = entity if index == 0 else index
        if value is None:
            slots.pop(slot_key, None)
            return
        try:
            slot = self._read(value, index)
        except StateError as exc:
            self._skip(f"the record of {entity!r} at {'snapshot' if index == 0 else f'delta {index}'} ({exc})")
            slots[slot_key] = _CORRUPT
            return
        slots[slot_key] = slot
        self._seq[entity] = max(self._seq.get(entity, 0), slot.head.seq)

    @staticmethod
    def _read(value: bytes, index: int) -> _Slot:
        if value[:len(MAGIC)] != MAGIC:
            if index:
                raise StateError("a delta key holds a format-1 checkpoint")
            return _Slot(Head(SNAPSHOT, 0, 0, 0), decode_legacy(value))
        head = read_head(value)
        if head.index != index:
            raise StateError(f"the key says delta {index}, the record says {head.index}")
        return _Slot(head, value)

    def _skip(self, what: str) -> None:
        self.skipped += 1
        log.warning("changelog: skipping %s", what)

    def entities(self) -> set[str]:
        """Entities with a record left (an erased one's tombstones leave none)."""
        return set(self._snapshots) | {entity for entity, slots in self._deltas.items() if slots}

    def history(self, entity: str) -> History:
        slots = self._deltas.get(entity, {})
        return History(self._seq.get(entity, 0), tuple(sorted(i for i, s in slots.items() if s is _CORRUPT)))

    def restore(self, entity: str, wanted: Callable[[tuple], bool] = lambda source: True) -> Optional[Restored]:
        """The entity's state, or None: not in the changelog, not `wanted` (by its last source), or broken (then
        logged, counted and listed in `cold`)."""
        snapshot = self._snapshots.get(entity)
        if snapshot is _CORRUPT:
            self.cold.append(entity)
            return None
        if snapshot is None:
            if self._deltas.get(entity):
                self._broken(entity, "deltas without a snapshot")
            return None
        try:
            message = snapshot.raw if snapshot.head.seq == 0 else decode_record(snapshot.raw)[1]
            if not wanted(tuple(message["last_source"])):
                return None
            chain = self._chain(entity, snapshot.head)
            state, last_source = message["state"], tuple(message["last_source"])
            for raw in chain:
                delta = decode_record(raw)[1]
                state, last_source = apply(state, delta["delta"]), tuple(delta["last_source"])
        except _Unreadable:
            self.cold.append(entity)
            return None
        except (StateError, DeltaError, AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            self._broken(entity, str(exc))
            return None
        return Restored(state, last_source, str(message["model_sha256"]))

    def _chain(self, entity: str, head: Head) -> list[bytes]:
        """The raw deltas of the snapshot's chain in index order; StateError when the chain is broken."""
        chain, newer = {}, []
        for index, slot in self._deltas.get(entity, {}).items():
            if slot is _CORRUPT:
                continue
            if (slot.head.seq, slot.head.chain) == (head.seq, head.chain):
                chain[index] = slot.raw
            elif slot.head.seq > head.seq:
                newer.append(index)
        if newer:
            raise StateError(f"deltas {sorted(newer)} belong to a newer snapshot than the one kept (out of order)")
        unreadable = [i for i, slot in self._deltas.get(entity, {}).items() if slot is _CORRUPT]
        if any(i <= len(chain) + 1 for i in unreadable):  # a missing link, or what may be the chain's next delta
            raise _Unreadable()
        if set(chain) != set(range(1, len(chain) + 1)):
            raise StateError(f"the chain has a gap (deltas {sorted(chain)})")
        return [chain[i] for i in range(1, len(chain) + 1)]

    def _broken(self, entity: str, reason: str) -> None:
        self._skip(f"the chain of {entity!r}: {reason}; it starts cold")
        self.cold.append(entity)
