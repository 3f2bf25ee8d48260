"""Replay dataset rows as the JSON records the daemon consumes (DESIGN.md §4).

Entities are interleaved row by row, as machines report side by side. Record timestamps are the dataset's own when it
has them (a CSV timestamp column, NAB), else the wall-clock time of sending (never going backwards per entity), so
end-to-end latency metrics stay meaningful during a replay; the report keeps each entity's timestamps so that alerts
can be mapped back to dataset rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np
import orjson


def encode_record(entity: str, ts: float, values: np.ndarray) -> bytes:
    """One input record in the `values` form: {"entity", "ts", "values": [C floats]}."""
    return orjson.dumps({"entity": entity, "ts": ts, "values": values}, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class ReplayReport:
    records: int = 0
    seconds: float = 0.0
    entities: list[str] = field(default_factory=list)
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)  # entity -> ts of each replayed row

    def row_of(self, entity: str, ts: float) -> int:
        """Dataset row index of the record of `entity` sent at `ts` (the last row sent at or before ts)."""
        return int(np.searchsorted(self.timestamps[entity], ts, side="right")) - 1


def interleaved_rows(arrays: dict[str, np.ndarray], limit: int = 0) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield (entity, row index, row) round-robin across entities until every array is exhausted."""
    lengths = {e: (min(len(a), limit) if limit else len(a)) for e, a in arrays.items()}
    for i in range(max(lengths.values(), default=0)):
        for entity, rows in arrays.items():
            if i < lengths[entity]:
                yield entity, i, rows[i]


def replay(arrays: dict[str, np.ndarray], send: Callable[[bytes, bytes], None], rate: float = 0.0, limit: int = 0,
           clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
           timestamps: Optional[dict[str, np.ndarray]] = None,
           report: Optional[ReplayReport] = None) -> ReplayReport:
    """Send every row as a record keyed by entity; `rate` > 0 paces to that many records per second in total.
    `timestamps` (entity -> [T] seconds) are the records' times where given, else the wall clock. A `report` passed
    in is filled while sending (its row_of works before the replay ends: the demo maps alerts to rows live)."""
    timestamps = timestamps or {}
    report = report if report is not None else ReplayReport()
    report.entities = list(arrays)
    stamps: dict[str, list[float]] = {e: [] for e in arrays}
    report.timestamps = stamps  # lists while sending, arrays at the end
    start = clock()
    for n, (entity, i, row) in enumerate(interleaved_rows(arrays, limit)):
        if rate > 0:
            ahead = start + n / rate - clock()
            if ahead > 0:
                sleep(min(ahead, 1.0))
        ts = float(timestamps[entity][i]) if entity in timestamps else clock()
        previous = stamps[entity]
        if previous and ts < previous[-1]:
            ts = previous[-1]
        previous.append(ts)
        send(entity.encode(), encode_record(entity, ts, row))
    report.records = sum(len(s) for s in stamps.values())
    report.timestamps = {e: np.asarray(s) for e, s in stamps.items()}
    report.seconds = clock() - start
    return report
