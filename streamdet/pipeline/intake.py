"""The per-sample formats' front of the pipeline: raw messages -> samples (formats/) -> rows (assemble.py).

engine.Pipeline uses it when `input.format` is not `streamdet`: each call returns the rows ready for the windows,
with the source of the first record of each row (its lowest offset), and the rejects to dead-letter: messages that
cannot be decoded, samples the assembler refuses (late, other_partition, entity_cap) and rows dropped for missing
channels (their payload is the row as JSON, naming what was present). Rows being assembled are pending: their
sources keep the commit floor down (pending_sources) and the rows travel in the entity's checkpoint (state_dict).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

import numpy as np
import orjson

from .assemble import AssembleResult, Assembler
from .formats import FormatDecoder, FormatOptions


class Intake(NamedTuple):
    """Rows for the windows as columns, the rejects as (raw, source, reason, detail), and per entity the source of
    the last record its assembly state took."""

    entities: list[str]
    ts: list[float]
    values: np.ndarray  # float32 [N, C]
    sources: list
    rejects: list[tuple[bytes, Any, str, str]]
    held: dict[str, Any]


class SampleIntake:
    def __init__(self, input_cfg, channels: Sequence[str], clock: Callable[[], float] = time.monotonic):
        self.decoder = FormatDecoder(input_cfg.format, FormatOptions.from_input(input_cfg))
        self.assembler = Assembler(channels, input_cfg.interval_s, input_cfg.carry_forward,
                                   input_cfg.allowed_lateness_s, input_cfg.max_entities, input_cfg.max_channels,
                                   input_cfg.entity_idle_s, clock, input_cfg.max_future_s)
        self.n_channels = len(channels)
        self.samples = 0  # decoded samples (after rates)

    def take(self, items: list[tuple[bytes, Any]],
             already_held: Optional[Callable[[str, Any], bool]] = None) -> Intake:
        """Decode and assemble one poll's records; `already_held(entity, source)` drops samples of records that a
        restored checkpoint already holds."""
        samples, rejected = self.decoder.decode_many([raw for raw, _ in items])
        self.samples += len(samples)
        rejects = [(items[i][0], items[i][1], exc.reason, exc.detail) for i, exc in rejected]
        pairs = [(sample, items[i][1]) for i, sample in samples]
        if already_held is not None:
            pairs = [(s, source) for s, source in pairs if not already_held(s.entity, source)]
        out = self.assembler.add_many(pairs)
        if out.rejected:
            raw_of = {id(source): raw for raw, source in items}
            rejects += [(raw_of.get(id(source), b""), source, exc.reason, exc.detail)
                        for source, exc in _first_per_source(out.rejected)]
        return self._intake(out, rejects, {s.entity for s, _ in pairs})

    def due(self) -> Intake:
        """Rows whose deadline passed on the clock."""
        return self._intake(self.assembler.due(), [], set())

    def drain(self) -> Intake:
        return self._intake(self.assembler.drain(), [], set())

    def _intake(self, out: AssembleResult, rejects: list, changed: set) -> Intake:
        """`held` names every entity whose assembly state changed (samples taken, rows emitted or dropped)."""
        for row, exc in out.dropped:
            rejects.append((row_payload(row.entity, row.ts, row.values, self.assembler.channels), row.source,
                            exc.reason, exc.detail))
        rows = out.rows
        changed.update(r.entity for r in rows)
        changed.update(r.entity for r, _ in out.dropped)
        held = {e: src for e in changed if (src := self.assembler.last_source(e)) is not None}
        values = np.stack([r.values for r in rows]) if rows else np.zeros((0, self.n_channels), np.float32)
        return Intake([r.entity for r in rows], [r.ts for r in rows], values, [r.source for r in rows], rejects,
                      held)

    def seconds_until_due(self) -> Optional[float]:
        return self.assembler.seconds_until_due()

    def pending_sources(self) -> Iterable[Any]:
        return self.assembler.pending_sources()

    def holds(self, entity: str) -> bool:
        return self.assembler.last_source(entity) is not None

    def state_dict(self, entity: str) -> Optional[dict]:
        return self.assembler.state_dict(entity) if self.holds(entity) else None

    def load_state(self, entity: str, state: dict) -> None:
        self.assembler.load_state(entity, state)

    def forget(self, entity: str) -> None:
        """Drop an entity without emitting its open rows (its checkpoint holds them for the next owner)."""
        self.assembler.forget(entity)


def _first_per_source(rejected: list) -> list:
    """One reject per record: a message whose samples were all late is one dead letter, not one per sample."""
    seen, out = set(), []
    for source, exc in rejected:
        if id(source) not in seen:
            seen.add(id(source))
            out.append((source, exc))
    return out


def row_payload(entity: str, ts: float, values: np.ndarray, channels: Sequence[str]) -> bytes:
    """A row as a dead letter's payload: the values that arrived, by channel name, and the missing ones."""
    cells = values.tolist()
    present = {c: float(v) for c, v in zip(channels, cells) if not math.isnan(v)}
    missing = [c for c, v in zip(channels, cells) if math.isnan(v)]
    return orjson.dumps({"entity": entity, "ts": ts, "metrics": present, "missing": missing})
