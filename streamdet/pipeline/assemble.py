"""Assemble per-sample messages into rows: one row per entity per interval on the bundle's channel list.

Per-sample formats (pipeline/formats/) deliver one metric at a time; the model needs every channel of a time step.
(About 350 lines: the rules below act on one shared per-entity state, open rows, whose checkpoint form sits beside
them; split apart they would each need the whole of it.)
The rules, in the order they apply to each sample:

- Channels that are not in the bundle's list are counted (`unknown_total`, and per name up to `max_channels`
  names), never fatal.
- One entity's rows are assembled from one partition: the partition of its open rows owns it (agents key messages
  by host: collectd's `Key`, Telegraf's `routing_tag`). A sample of that entity from another partition while rows
  are open is rejected (`other_partition`): a row built from two partitions could not be committed safely, and a
  second instance would build a second half-row. When no row is open, a sample from another partition moves the
  entity there (a re-keyed agent; an agent whose first message went out before it knew the partition count).
- Time is cut into intervals (`input.interval_s`, else the message's own, as collectd's `interval`, else 10 s)
  anchored at the entity's first sample, so an agent's read cycle (samples a few ms apart) lands in one row even
  when it straddles a whole second. A row's timestamp is the interval's centre.
- A second sample of a channel in one row is a duplicate: counted, the first value kept.
- A sample for a row already emitted is late: within `input.allowed_lateness_s` of the entity's newest sample it
  is counted (`late_dropped`: the row was scored without it), beyond that rejected (`late`). One more than
  `input.max_future_s` ahead of the wall clock is rejected (`bad_ts`): it would make every later sample late.
- A row is emitted when every channel arrived, or at its deadline: when the entity's samples reached two intervals
  later (event time: replays and training), or when one interval passed on the clock since its first sample arrived
  (live), or when more than MAX_OPEN_ROWS rows are open. Rows of one entity are emitted in time order.
- A channel missing at the deadline repeats its last value if it had one within `input.carry_forward` intervals.
  Otherwise the row is not scored: it is returned in `dropped` with reason `missing_channel` naming the channels
  (the daemon sends it to the dead-letter topic). We chose rejecting over scoring a marked gap because the models
  were never trained on gaps: an invented value would raise scores and make alerts out of a dead agent.
- At most `max_entities` entities are assembled; when full, the least recently active one is evicted if it has
  been idle `entity_idle_s` (its open rows are emitted first), else the new entity's sample is rejected
  (`entity_cap`). Open rows per entity are bounded, so memory is bounded by entities x MAX_OPEN_ROWS x channels.

Pure (no Kafka): sources are opaque; a source that is a tuple (topic, partition, offset, ...) names the partition.
A row carries the source of the first sample that opened it, the lowest offset of its records, so a commit floor
computed from rows never passes a record that is not yet scored. `state_dict`/`load_state` hold everything an
entity needs to continue after a restart, including its open rows.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from ..errors import DecodeError
from .formats.common import Sample

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0  # Telegraf's default interval; used when neither the config nor the message gives one
MAX_OPEN_ROWS = 8  # rows per entity waiting for channels; one more forces the oldest out
EVENT_DEADLINE_INTERVALS = 2  # a row is due once its entity's samples reach this many intervals later
NEVER = -(2 ** 62)
LOGGED_UNKNOWN = 20  # unknown channel names logged once each; the rest are only counted


@dataclass
class Row:
    entity: str
    ts: float  # the interval's centre: origin + bucket x interval
    values: np.ndarray  # float32 [C]; NaN where a channel was missing (dropped rows only)
    source: Any  # the source of the first sample of the row (the lowest offset of its records)
    carried: tuple[str, ...] = ()  # channels that repeated their last value


@dataclass
class AssembleResult:
    rows: list[Row] = field(default_factory=list)  # complete rows, per entity in time order
    dropped: list[tuple[Row, DecodeError]] = field(default_factory=list)  # rows not scored (missing channels)
    rejected: list[tuple[Any, DecodeError]] = field(default_factory=list)  # (source, error) of rejected samples

    def extend(self, other: "AssembleResult") -> None:
        self.rows += other.rows
        self.dropped += other.dropped
        self.rejected += other.rejected


class _Open:
    """A row being assembled: values as a Python list (cheaper per sample than numpy element writes)."""

    __slots__ = ("values", "present", "source", "arrived")

    def __init__(self, n_channels: int, source: Any, arrived: float):
        self.values, self.present, self.source, self.arrived = [math.nan] * n_channels, 0, source, arrived


class _Entity:
    __slots__ = ("interval", "origin", "open", "emitted", "newest_bucket", "newest_ts", "last", "last_seen",
                 "partition", "last_source", "active")

    def __init__(self, n_channels: int, interval: float, origin: float):
        self.interval, self.origin = interval, origin
        self.open: dict[int, _Open] = {}
        self.emitted = NEVER  # the last bucket emitted (or dropped)
        self.newest_bucket, self.newest_ts = NEVER, -math.inf
        self.last = [math.nan] * n_channels  # the last real value of each channel
        self.last_seen = [NEVER] * n_channels  # the bucket of that value
        self.partition: Optional[tuple] = None
        self.last_source: Any = None  # the source of the last sample accepted (restart: skip what is held)
        self.active = 0.0


class Assembler:
    def __init__(self, channels: Sequence[str], interval_s: float = 0.0, carry_forward: int = 3,
                 allowed_lateness_s: float = 300.0, max_entities: int = 100_000, max_channels: int = 4096,
                 entity_idle_s: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 max_future_s: float = 86_400.0):
        self.channels = tuple(channels)
        self._index = {name: i for i, name in enumerate(self.channels)}
        self.interval_s, self.carry_forward = interval_s, carry_forward
        self.allowed_lateness_s, self.max_future_s, self.clock = allowed_lateness_s, max_future_s, clock
        self.max_entities, self.max_channels, self.entity_idle_s = max_entities, max_channels, entity_idle_s
        self._entities: OrderedDict[str, _Entity] = OrderedDict()  # least recently active first
        self._deadlines: list[tuple[float, str, int]] = []  # heap of (clock deadline, entity, bucket)
        self.unknown_total = 0
        self.unknown: dict[str, int] = {}  # per unknown channel name, at most max_channels names
        self.duplicates = self.late_dropped = self.carried = 0

    def __len__(self) -> int:
        return len(self._entities)

    def add_many(self, samples: Iterable[tuple[Sample, Any]]) -> AssembleResult:
        """Add (sample, source) pairs in arrival order; returns the rows completed or due on the way."""
        out = AssembleResult()
        now, newest = self.clock(), time.time() + self.max_future_s
        index = self._index
        for sample, source in samples:
            column = index.get(sample.channel)
            if column is None:
                self._count_unknown(sample.channel)
                continue
            try:
                if not sample.ts <= newest:  # NaN fails too
                    raise DecodeError("bad_ts", f"{sample.channel}: ts {sample.ts!r} is more than input.max_future_s="
                                                f"{self.max_future_s:g} s ahead of the wall clock")
                self._add(sample, column, source, now, out)
            except DecodeError as exc:
                out.rejected.append((source, exc))
        return out

    def _add(self, sample: Sample, column: int, source: Any, now: float, out: AssembleResult) -> None:
        state = self._entity(sample, source, now, out)
        bucket = math.floor((sample.ts - state.origin) / state.interval + 0.5)
        if bucket <= state.emitted:
            self._late(state, sample)
            return
        row = state.open.get(bucket)
        check = row is None  # a new row can make older ones due (event time, open-row bound)
        if check:
            row = state.open[bucket] = _Open(len(self.channels), source, now)
            heapq.heappush(self._deadlines, (now + state.interval, sample.entity, bucket))
        if row.values[column] == row.values[column]:  # not NaN: the channel is already in this row
            self.duplicates += 1
        else:
            row.values[column] = sample.value
            row.present += 1
            check = check or row.present == len(row.values)  # complete
        state.last_source, state.active = source, now
        if sample.ts > state.newest_ts:
            state.newest_ts = sample.ts
        if bucket > state.newest_bucket:
            state.newest_bucket = bucket
        if check:
            self._emit_ready(sample.entity, state, out, now)

    def _late(self, state: _Entity, sample: Sample) -> None:
        behind = state.newest_ts - sample.ts
        if behind > self.allowed_lateness_s:
            raise DecodeError("late", f"{sample.channel}: ts {sample.ts!r} is {behind:.0f} s behind the entity's "
                                      f"newest sample (input.allowed_lateness_s={self.allowed_lateness_s:g})")
        self.late_dropped += 1

    def _entity(self, sample: Sample, source: Any, now: float, out: AssembleResult) -> _Entity:
        state = self._entities.get(sample.entity)
        if state is None:
            if len(self._entities) >= self.max_entities:
                self._evict_idle(sample.entity, now, out)
            interval = self.interval_s or sample.interval or DEFAULT_INTERVAL_S
            state = self._entities[sample.entity] = _Entity(len(self.channels), interval, sample.ts)
        else:
            self._entities.move_to_end(sample.entity)
        partition = _partition(source)
        if partition is not None:
            if state.partition is None:
                state.partition = partition
            elif partition != state.partition and not state.open:
                state.partition = partition  # nothing of the old partition is being assembled: move
            elif partition != state.partition:
                raise DecodeError("other_partition", f"{sample.entity}: sample from {partition[0]}[{partition[1]}], "
                                                     f"but the entity is assembled from {state.partition[0]}"
                                                     f"[{state.partition[1]}]; key messages by host")
        return state

    def _evict_idle(self, newcomer: str, now: float, out: AssembleResult) -> None:
        entity, state = next(iter(self._entities.items()))
        if now - state.active < self.entity_idle_s:
            raise DecodeError("entity_cap", f"{newcomer}: {self.max_entities} entities are being assembled "
                                            f"(input.max_entities) and none has been idle {self.entity_idle_s:g} s")
        out.extend(self.remove(entity))

    def _emit_ready(self, entity: str, state: _Entity, out: AssembleResult, now: float) -> None:
        """Emit the oldest open rows while complete or past a deadline (the clock's too: due() may have skipped one)."""
        n = len(self.channels)
        while state.open:
            bucket = min(state.open)
            row = state.open[bucket]
            due = (row.present == n or state.newest_bucket - bucket >= EVENT_DEADLINE_INTERVALS
                   or len(state.open) > MAX_OPEN_ROWS or now >= row.arrived + state.interval)
            if not due:
                return
            del state.open[bucket]
            self._emit(entity, state, bucket, row, out)

    def _emit(self, entity: str, state: _Entity, bucket: int, row: _Open, out: AssembleResult) -> None:
        values, last, last_seen = row.values, state.last, state.last_seen
        carried, missing = [], []
        for c, value in enumerate(values):
            if value == value:
                last[c], last_seen[c] = value, bucket
            elif bucket - last_seen[c] <= self.carry_forward:
                values[c] = last[c]
                carried.append(self.channels[c])
            else:
                missing.append(self.channels[c])
        state.emitted = bucket
        emitted = Row(entity, state.origin + bucket * state.interval, np.array(values, dtype=np.float32),
                      row.source, tuple(carried))
        if missing:
            detail = (f"{entity} at ts {emitted.ts:.3f}: {len(missing)} channel(s) missing for more than "
                      f"input.carry_forward={self.carry_forward} intervals: {', '.join(missing[:5])}"
                      f"{', ...' if len(missing) > 5 else ''}")
            out.dropped.append((emitted, DecodeError("missing_channel", detail)))
            return
        self.carried += len(carried)
        out.rows.append(emitted)

    def _count_unknown(self, channel: str) -> None:
        self.unknown_total += 1
        if channel in self.unknown:
            self.unknown[channel] += 1
        elif len(self.unknown) < self.max_channels:
            self.unknown[channel] = 1
            if len(self.unknown) <= LOGGED_UNKNOWN:
                log.info("channel %r is not in the bundle: counted, not scored%s", channel,
                         "" if len(self.unknown) < LOGGED_UNKNOWN else " (further unknown channels: counted only)")

    def due(self) -> AssembleResult:
        """Rows whose clock deadline passed (one interval after their first sample arrived)."""
        out = AssembleResult()
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, entity, bucket = heapq.heappop(self._deadlines)
            state = self._entities.get(entity)
            if state is not None and bucket in state.open:
                self._emit_ready(entity, state, out, now)
        return out

    def seconds_until_due(self) -> Optional[float]:
        """Until the next clock deadline of an open row (for the daemon's poll timeout), None when none is open."""
        while self._deadlines:
            deadline, entity, bucket = self._deadlines[0]
            state = self._entities.get(entity)
            if state is not None and bucket in state.open:
                return max(0.0, deadline - self.clock())
            heapq.heappop(self._deadlines)
        return None

    def drain(self) -> AssembleResult:
        """Emit every open row now (end of a replay or of training data; shutdown without checkpoints)."""
        out = AssembleResult()
        for entity, state in self._entities.items():
            for bucket in sorted(state.open):
                self._emit(entity, state, bucket, state.open.pop(bucket), out)
        return out

    def remove(self, entity: str) -> AssembleResult:
        """Forget an entity (rebalance, eviction), emitting its open rows first."""
        out = AssembleResult()
        state = self._entities.pop(entity, None)
        if state is not None:
            for bucket in sorted(state.open):
                self._emit(entity, state, bucket, state.open.pop(bucket), out)
        return out

    def forget(self, entity: str) -> None:
        """Drop an entity without emitting its open rows (they live on in its checkpoint)."""
        self._entities.pop(entity, None)

    def entities(self) -> list[str]:
        return list(self._entities)

    def pending_sources(self) -> Iterable[Any]:
        """The source of every open row: the lowest offset of the records it holds."""
        for state in self._entities.values():
            for row in state.open.values():
                yield row.source

    def last_source(self, entity: str) -> Any:
        state = self._entities.get(entity)
        return None if state is None else state.last_source

    def state_dict(self, entity: str) -> dict:
        """The entity's state as plain data (lists, floats, tuples; NaN for missing values), for checkpoints. Sources
        are kept as lists of sources (`sources`: the open rows', then the last one taken), the form in which the
        checkpoint codec gives them back as they were."""
        s = self._entities[entity]
        rows = sorted(s.open.items())
        return {"interval": s.interval, "origin": s.origin, "emitted": s.emitted, "newest_bucket": s.newest_bucket,
                "newest_ts": s.newest_ts, "last": list(s.last), "last_seen": list(s.last_seen),
                "partition": s.partition, "channels": list(self.channels),
                "open": [[bucket, list(r.values), r.present] for bucket, r in rows],
                "sources": [r.source for _, r in rows] + [s.last_source]}

    def load_state(self, entity: str, state: dict) -> None:
        """Restore an entity from state_dict(); open rows get a fresh clock deadline."""
        if list(state["channels"]) != list(self.channels):
            raise DecodeError("bad_state", f"{entity}: checkpointed rows were assembled for other channels")
        now = self.clock()
        s = _Entity(len(self.channels), float(state["interval"]), float(state["origin"]))
        s.emitted, s.newest_bucket, s.newest_ts = int(state["emitted"]), int(state["newest_bucket"]), \
            float(state["newest_ts"])
        s.last, s.last_seen = [float(v) for v in state["last"]], [int(v) for v in state["last_seen"]]
        s.partition = tuple(state["partition"]) if state["partition"] is not None else None
        *sources, s.last_source = state["sources"]
        s.active = now
        for (bucket, values, present), source in zip(state["open"], sources):
            row = s.open[int(bucket)] = _Open(len(self.channels), source, now)
            row.values, row.present = [float(v) for v in values], int(present)
            heapq.heappush(self._deadlines, (now + s.interval, entity, int(bucket)))
        self._entities[entity] = s
        self._entities.move_to_end(entity)


def _partition(source: Any) -> Optional[tuple]:
    """(topic, partition) of a Kafka source (a serve Source, or a plain (topic, partition, offset, ...) tuple); None
    for sources without one (backtest rows, training)."""
    tp = getattr(source, "tp", None)
    if tp is not None:
        return tuple(tp)
    if isinstance(source, tuple) and len(source) >= 3 and isinstance(source[0], str):
        return tuple(source[:2])
    return None
