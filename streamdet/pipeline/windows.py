"""Per-entity sliding windows in preallocated buffers (ring.py), emitting one window request every `stride` points.

Every record gets exactly one score: a request carries the whole window [L, C] in time order and says that its last
`n_new` steps are new. Before an entity has L points the window is edge-padded (the first row repeated at the front)
and the request is marked warm=False, so warm-up records are scored too but never fire alerts. Entities are kept in
LRU order; when the store is full, the least recently used entity is evicted if idle for entity_idle_s (take_flushed:
its unscored points as a partial request; take_evicted: its name), otherwise the new entity is rejected.

A stride bounds the model's cost, not the detection delay: an entity sending one point a minute would wait `stride`
minutes for its points to be scored. With max_delay_s, a point that has waited that long on the store clock is
emitted in a partial request (take_overdue) with the other unscored points of its entity. A clock that never moves
(backtests) never makes a point overdue, so replays stay deterministic. take_waiting emits every entity's unscored
points at once (the adaptive stride's caller, when the load has dropped).

An entity with several points in a poll takes them as one block, sliced from the poll sorted by entity once
(blocks.py); one with a few points, or whose block could hold a late point, takes them one by one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator

import numpy as np

from ..errors import ConfigError, DecodeError
from .blocks import PollBlocks
from .ring import Ring, WindowRequest


BLOCK_MIN = 4  # an entity's points in one batch from which writing them as one block beats one by one


@dataclass
class PushResult:
    """What push did, by position in its input."""

    requests: list[tuple[int, WindowRequest]] = field(default_factory=list)  # (position completing it, request)
    rejected: list[tuple[int, DecodeError]] = field(default_factory=list)
    last: dict[str, int] = field(default_factory=dict)  # entity -> position of its last accepted point


class WindowStore:
    """Ring buffers for up to `max_entities` entities (LRU)."""

    def __init__(self, window: int, n_channels: int, stride: int, max_entities: int, allowed_lateness_s: float,
                 entity_idle_s: float, clock: Callable[[], float] = time.monotonic, max_delay_s: float = 0.0):
        if stride > window:
            raise ConfigError(f"scoring.stride: {stride} is larger than the model window {window}; points would go unscored")
        self.window, self.n_channels, self.stride = window, n_channels, stride
        self.max_entities = max_entities
        self.allowed_lateness_s = allowed_lateness_s
        self.entity_idle_s = entity_idle_s
        self.clock = clock
        self.max_delay_s = max_delay_s
        self._rings: OrderedDict[str, Ring] = OrderedDict()
        self._flushed: list[WindowRequest] = []
        self._evicted: list[tuple[str, float, Any]] = []  # see take_evicted
        # entity -> store clock when its oldest unscored point arrived, oldest first
        self._waiting: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rings)

    def __contains__(self, entity: str) -> bool:
        return entity in self._rings

    def set_stride(self, stride: int) -> None:
        """Change how many new points make a request (the adaptive stride). An entity holding more pending points
        than the new stride sends them all at its next point: every point is still scored exactly once."""
        if not 1 <= stride <= self.window:
            raise ConfigError(f"stride {stride} outside 1..{self.window} (the model window)")
        self.stride = stride

    def _push_one(self, entity: str, ts: float, values: np.ndarray, source: Hashable,
                  now: float) -> WindowRequest | None:
        """Add one point; return a request when the entity has `stride` unscored points."""
        ring = self._rings.get(entity)
        if ring is None:
            ring = self._admit(entity)
        elif ts < ring.max_ts - self.allowed_lateness_s:
            raise self._late(entity, ts, ring.max_ts)
        ring.write(ts, values, source)
        ring.last_active = now
        self._rings.move_to_end(entity)
        request = ring.emit(entity, ring.pending) if ring.pending >= self.stride else None
        self._note_waiting(entity, ring, ring.last_active, restarted=request is not None)
        return request

    def push(self, entities: list[str], ts: list[float], values: np.ndarray, sources: list,
             now: float | None = None) -> PushResult:
        """Push a batch of points (values float32 [N, C]) in order; a single point is a batch of one. The requests,
        their order, the rejections and the resulting state are those of pushing the points one at a time; a warm
        entity with BLOCK_MIN or more points in the batch is written as one block (numpy). `now`: the store clock,
        read once per batch."""
        now = self.clock() if now is None else now
        out = PushResult()
        groups: dict[str, list[int]] = {}
        for k, entity in enumerate(entities):
            group = groups.get(entity)
            if group is None:
                groups[entity] = [k]
            else:
                group.append(k)
        admitted = sum(1 for entity in groups if entity not in self._rings)
        if self._flushed or len(self._rings) + admitted > self.max_entities:  # admissions may evict: exact order
            self._push_each(range(len(entities)), entities, ts, values, sources, now, out)
        else:
            blocks = None
            for entity, positions in groups.items():
                ring = self._rings.get(entity) or self._admit(entity)
                if len(positions) < BLOCK_MIN or ring.pending >= self.stride or \
                        (ring.seen < self.window and len(positions) > ring.spare):
                    self._push_group(entity, ring, positions, ts, values, sources, now, out)
                    continue
                if blocks is None:
                    blocks = PollBlocks(groups, ts, values, sources)
                emitted = blocks.append_to(ring, entity, positions, self.stride, self.allowed_lateness_s)
                if emitted is None:  # a point may be late: one by one, each checked
                    self._push_group(entity, ring, positions, ts, values, sources, now, out)
                    continue
                out.requests += emitted
                out.last[entity] = positions[-1]
                self._note_waiting(entity, ring, now, restarted=bool(emitted))
            for entity in sorted(out.last, key=out.last.__getitem__):  # LRU order of one-by-one pushes
                self._rings.move_to_end(entity)
                self._rings[entity].last_active = now
        out.requests.sort(key=lambda pair: pair[0])  # stable: a point's request before the evictions it caused
        out.rejected.sort(key=lambda pair: pair[0])
        return out

    def _push_each(self, positions, entities, ts, values, sources, now: float, out: PushResult) -> None:
        for k in positions:
            try:
                request = self._push_one(entities[k], ts[k], values[k], sources[k], now)
            except DecodeError as exc:
                out.rejected.append((k, exc))
                continue
            out.last[entities[k]] = k
            if request is not None:
                out.requests.append((k, request))
            if self._flushed:
                out.requests += [(k, flushed) for flushed in self.take_flushed()]

    def _push_group(self, entity: str, ring: Ring, positions: list[int], ts: list[float], values: np.ndarray,
                    sources: list, now: float, out: PushResult) -> None:
        """An admitted entity's points one by one, as _push_one would take them, with its bookkeeping (LRU place,
        waiting time) done once for the group: with 1,000 entities a poll brings each about 5 points, too few for
        the block path, and this bookkeeping per point made the store twice as costly per record as at 100
        entities (tools/bench_pipeline.py --saturation)."""
        lateness, stride = self.allowed_lateness_s, self.stride
        emitted, last = False, None
        for k in positions:
            t = ts[k]
            if t < ring.max_ts - lateness:
                out.rejected.append((k, self._late(entity, t, ring.max_ts)))
                continue
            ring.write(t, values[k], sources[k])
            if ring.pending >= stride:
                out.requests.append((k, ring.emit(entity, ring.pending)))
                emitted = True
            last = k
        if last is not None:
            out.last[entity] = last
            ring.last_active = now
            self._note_waiting(entity, ring, now, restarted=emitted)

    def _note_waiting(self, entity: str, ring: Ring, now: float, restarted: bool) -> None:
        """Keep `entity`'s place in _waiting after a push: out when nothing is pending; after an emitted request the
        points still pending arrived in this push, so they wait from `now`; otherwise the oldest keeps its time."""
        if not ring.pending:
            self._waiting.pop(entity, None)
        elif restarted or entity not in self._waiting:
            self._waiting.pop(entity, None)
            self._waiting[entity] = now

    def _late(self, entity: str, ts: float, latest: float) -> DecodeError:
        return DecodeError("late", f"ts: {ts} is {latest - ts:.3f} s behind entity {entity!r}'s latest "
                                   f"point, allowed lateness is {self.allowed_lateness_s} s")

    def _admit(self, entity: str) -> Ring:
        if len(self._rings) >= self.max_entities:
            oldest, ring = next(iter(self._rings.items()))
            idle = self.clock() - ring.last_active
            if idle < self.entity_idle_s:
                raise DecodeError("entity_cap", f"entity {entity!r}: {self.max_entities} entities active "
                                                f"(input.max_entities); least recently used is idle only {idle:.0f} s")
            self._evict(oldest)
        ring = Ring(self.window, self.n_channels)
        self._rings[entity] = ring
        return ring

    def _evict(self, entity: str) -> None:
        ring = self._rings.pop(entity)
        self._waiting.pop(entity, None)
        self._evicted.append((entity, float(ring.max_ts), ring.last_source))
        if ring.pending:
            self._flushed.append(ring.emit(entity, ring.pending))

    def last_point(self, entity: str) -> tuple[float, float, Any, int] | None:
        """(store clock of its last push, newest timestamp, last point's source, points pending); None: not held."""
        ring = self._rings.get(entity)
        if ring is None or not ring.end:
            return None
        return ring.last_active, float(ring.max_ts), ring.last_source, ring.pending

    def take_evicted(self) -> list[tuple[str, float, Any]]:
        """(entity, newest timestamp, last point's source) of each entity evicted since the last call."""
        out, self._evicted = self._evicted, []
        return out

    def remove(self, entity: str) -> WindowRequest | None:
        """Forget an entity (e.g. its partition was revoked); returns its unscored points as a partial request."""
        ring = self._rings.pop(entity, None)
        self._waiting.pop(entity, None)
        return ring.emit(entity, ring.pending) if ring is not None and ring.pending else None

    def has_flushed(self) -> bool:
        return bool(self._flushed)

    def take_flushed(self) -> list[WindowRequest]:
        """Partial requests of entities evicted since the last call (their points still need scores)."""
        out, self._flushed = self._flushed, []
        return out

    def drain(self) -> list[WindowRequest]:
        """Emit every entity's unscored points as partial requests (n_new < stride), for shutdown."""
        out = self.take_flushed()
        out.extend(ring.emit(entity, ring.pending) for entity, ring in self._rings.items() if ring.pending)
        self._waiting.clear()
        return out

    def take_waiting(self) -> list[WindowRequest]:
        """Partial requests for every entity with unscored points, the longest waiting first: when the load has
        dropped (pipeline/pacing.py) they need not wait for the rest of their stride."""
        out = []
        for entity in self._waiting:
            ring = self._rings[entity]
            if ring.pending:
                out.append(ring.emit(entity, ring.pending))
        self._waiting.clear()
        return out

    def take_overdue(self, now: float | None = None) -> list[WindowRequest]:
        """Partial requests for entities whose oldest unscored point has waited max_delay_s or longer."""
        out: list[WindowRequest] = []
        if not self._waiting or not self.max_delay_s:
            return out
        limit = (self.clock() if now is None else now) - self.max_delay_s
        due = []
        while self._waiting:
            entity, since = next(iter(self._waiting.items()))
            if since > limit:
                break
            del self._waiting[entity]
            due.append((since, entity))
        for _, entity in sorted(due):  # entities waiting since the same clock reading: by name, however batched
            ring = self._rings[entity]
            if ring.pending:
                out.append(ring.emit(entity, ring.pending))
        return out

    def seconds_until_overdue(self, now: float | None = None) -> float | None:
        """How long until the next point becomes overdue (None when no point waits or there is no bound)."""
        if not self._waiting or not self.max_delay_s:
            return None
        since = next(iter(self._waiting.values()))
        return max(0.0, since + self.max_delay_s - (self.clock() if now is None else now))

    def pending_sources(self) -> Iterator[Any]:
        """Sources of all points that are buffered but not yet part of an emitted request."""
        for ring in self._rings.values():
            if ring.pending:
                yield from ring.pending_sources()
        for req in self._flushed:
            yield from req.sources

    def state_dict(self, entity: str) -> dict:
        """The entity's full state as plain data (numpy arrays, ints, lists), for checkpoints."""
        return self._rings[entity].state()

    def load_state(self, entity: str, state: dict) -> None:
        """Restore an entity from state_dict(); subsequent pushes produce the same requests as before saving."""
        values = np.asarray(state["values"], dtype=np.float32)
        if values.shape != (self.window, self.n_channels):
            raise DecodeError("bad_state", f"state of {entity!r}: values shape {values.shape}, expected "
                                           f"{(self.window, self.n_channels)}")
        if entity not in self._rings:
            self._admit(entity)
        ring = self._rings[entity]
        sources = [tuple(s) if isinstance(s, list) else s for s in state["sources"]]
        ring.load(values, np.asarray(state["ts"], dtype=np.float64), sources, int(state["pos"]), int(state["seen"]),
                  int(state["pending"]), float(state["max_ts"]))
        ring.last_active = self.clock()
        self._waiting.pop(entity, None)
        if ring.pending:
            self._waiting[entity] = ring.last_active  # restored points wait from now

