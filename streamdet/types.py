"""Values shared by io, pipeline, serve and evaluate. Standard library only, so that every layer can import it.

A record travels as `(raw bytes, source)`. The pipeline never looks inside a source: it carries it from the record to
the verdicts, rejects and alerts derived from it, and reports which source each entity's window holds last. Only the
owner of the records interprets it: serve/ (Kafka coordinates, `Source`) and the backtest (`Row`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, NamedTuple


class Partition(NamedTuple):
    """A Kafka topic partition; equal to (and hashed like) the plain `(topic, partition)` tuple."""

    topic: str
    partition: int


class Source(NamedTuple):
    """Where a Kafka record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0

    @property
    def tp(self) -> Partition:
        return Partition(self.topic, self.partition)

    def describe(self) -> dict:
        """The `source` of an alert message (DESIGN.md §4)."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class Row(NamedTuple):
    """A record of an in-process replay (backtest): the row of the series it was made from."""

    index: int

    def describe(self) -> dict:
        return {"row": self.index}


def describe_source(source: Any) -> dict:
    """An alert message's `source`: the source's own description, or an opaque reference."""
    describe = getattr(source, "describe", None)
    if describe is not None:
        return describe()
    return {"ref": list(source) if isinstance(source, (tuple, list)) else source}


class Reject(NamedTuple):
    """A record that cannot be used: it goes to the dead-letter topic with its reason (decode.REASONS)."""

    raw: bytes
    source: Hashable
    reason: str
    detail: str


@dataclass
class Verdict:
    """One record's outcome (tests and reports; the daemon reads whole `Verdicts`)."""

    entity: str
    ts: float
    score: float
    threshold: float
    over: bool
    source: Any
    warm: bool = True  # False for points scored in an edge-padded warm-up window (they never fire)


@dataclass
class Verdicts:
    """The new points of one scored window, as parallel columns (one entry per record, oldest first)."""

    entity: str
    ts: Any  # float64 [n]
    scores: Any  # float64 [n]
    thresholds: Any  # float64 [n]
    over: Any  # bool [n]
    sources: list  # [n]
    warm: bool  # False for points of an edge-padded warm-up window (they never fire)

    def __len__(self) -> int:
        return len(self.sources)

    def points(self) -> Iterator[Verdict]:
        for j, source in enumerate(self.sources):
            yield Verdict(self.entity, float(self.ts[j]), float(self.scores[j]), float(self.thresholds[j]),
                          bool(self.over[j]), source, self.warm)


@dataclass
class StepResult:
    """What one pipeline call produced, for its owner to publish."""

    rejected: list[Reject] = field(default_factory=list)
    scored: list[Verdicts] = field(default_factory=list)
    alerts: list = field(default_factory=list)  # pipeline.alerts.AlertEvent
    batches: list[tuple[int, float]] = field(default_factory=list)  # (batch size, inference seconds)
    held: dict[str, Any] = field(default_factory=dict)  # entity -> source of the last record its window took
    evicted: list[str] = field(default_factory=list)  # entities dropped for idleness at the cap, their last points scored
    nonfinite: dict[str, int] = field(default_factory=dict)  # entity -> its points scored NaN or infinite

    @property
    def n_scored(self) -> int:
        return sum(len(chunk) for chunk in self.scored)

    def points(self) -> Iterator[Verdict]:
        """Every scored point, one object each."""
        for chunk in self.scored:
            yield from chunk.points()
