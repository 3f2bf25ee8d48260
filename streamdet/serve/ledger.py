"""Per-partition and per-entity bookkeeping of delivery: what may be committed, and what each entity's state holds.

The pipeline never holds Kafka offsets (DESIGN.md §5). It reports which source each entity's window took last
(StepResult.held) and which sources it holds unscored (Pipeline.pending_sources); the ledger turns that into:
- the offsets safe to commit: per partition, min(first record not yet scored, next record not yet read);
- the entities whose state changed since their last checkpoint (`touched`), and the source each one's state holds;
- after a restore, which redelivered records the restored windows already hold (skip-through).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from ..types import Partition, Source


class Ledger:
    def __init__(self):
        self.held: dict[str, Source] = {}  # entity -> source of the last record its window took
        self.touched: set[str] = set()  # entities changed since their last checkpoint
        self.committed: dict[Partition, int] = {}
        self._skip_through: dict[str, Source] = {}  # entity -> the last record its restored state holds
        self.skipped = 0  # redelivered records found already inside restored state

    def took(self, held: dict[str, Source]) -> None:
        """Entities whose windows took records in a pipeline step (StepResult.held)."""
        if held:
            self.held.update(held)
            self.touched.update(held)

    def restored(self, entity: str, through: Source) -> None:
        """The entity's restored state holds every record up to `through`; those are skipped when redelivered."""
        self.held[entity] = through
        self._skip_through[entity] = through

    def skip_filter(self) -> Optional[Callable[[str, Source], bool]]:
        """The pipeline's `already_held` predicate while some restored entity may see redelivered records."""
        return self._already_held if self._skip_through else None

    def _already_held(self, entity: str, source: Source) -> bool:
        """A redelivered record sits at or below the checkpoint's offset with a timestamp no later than its record's
        (Kafka keeps a record's timestamp). A record below that offset but newer is not one: the topic was deleted
        and created again, its offsets restarted at 0, and skipping by offset alone dropped every new record of the
        entity until the new offsets passed the old ones."""
        held = self._skip_through.get(entity)
        if held is None:
            return False
        if (source.topic == held.topic and source.partition == held.partition and source.offset <= held.offset
                and source.timestamp_ms <= held.timestamp_ms):
            self.skipped += 1
            return True
        del self._skip_through[entity]  # past the checkpoint: from here on every record is new
        return False

    def entities_of(self, partitions: Iterable[Partition]) -> list[str]:
        """Entities whose latest record came from one of `partitions`."""
        wanted = set(partitions)
        return [entity for entity, source in self.held.items() if (source.topic, source.partition) in wanted]

    def forget(self, entities: Iterable[str], partitions: Iterable[Partition]) -> None:
        """Revoked partitions and the entities that came with them now belong to another instance."""
        for entity in entities:
            self.held.pop(entity, None)
            self.touched.discard(entity)
            self._skip_through.pop(entity, None)
        for tp in partitions:
            self.committed.pop(tp, None)

    def offsets_to_commit(self, pending: Iterable[Source], consumed: dict[Partition, int],
                          partitions: Optional[Iterable[Partition]] = None) -> dict[Partition, int]:
        """Per partition (all consumed ones, or `partitions`): min(first unscored offset, next offset to read),
        where it differs from what was committed last."""
        floor: dict[tuple, int] = {}
        for source in pending:
            key = (source.topic, source.partition)
            offset = floor.get(key)
            if offset is None or source.offset < offset:
                floor[key] = source.offset
        offsets = {}
        for tp in (consumed if partitions is None else partitions):
            if tp not in consumed:
                continue
            offset = min(floor.get(tp, consumed[tp]), consumed[tp])
            if self.committed.get(tp) != offset:
                offsets[tp] = offset
        return offsets
