"""One entity's buffer of its last L points, and the window request it emits (pipeline/windows.py keeps one per
entity).

The points sit in a linear buffer of L + spare rows, oldest first: a point is appended at `end`, the window is the
one contiguous slice [end - L, end), and when the buffer is full its last L points move to the front (one copy of
the window per `spare` points). A ring buffer would need its two halves joined for every emitted window and for every
block of points: with 1,000 entities a poll brings each about 20 points, and the block path that reordered them was
two thirds of the window store's time (docs/performance.md, "The window store as a linear buffer"). Checkpoints keep
the ring layout of format 1 and 2 (point i in slot i mod L, `pos` = the next slot): `state` and `load` convert, so
the changelog's deltas are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class WindowRequest:
    entity: str
    window: np.ndarray  # float32 [L, C], oldest first
    n_new: int  # the last n_new steps of the window are the points to score
    ts: np.ndarray  # float64 [n_new]
    sources: list  # [n_new] source tuples of the new points
    warm: bool  # False while the window is edge-padded (fewer than L points seen)


def spare_rows(window: int) -> int:
    """Rows past the window: a quarter of it (at least 16), so moving the window to the front costs about four row
    copies per point at most, for a quarter more memory than the window itself."""
    return max(16, window // 4)


class Ring:
    """One entity's buffer: values [L + spare, C], timestamps and sources alike; `end` is the row after the newest
    point. While fewer than L points were seen they sit at [0, seen)."""

    def __init__(self, window: int, n_channels: int):
        self.window = window
        self.spare = spare_rows(window)
        capacity = window + self.spare
        self.values = np.zeros((capacity, n_channels), dtype=np.float32)
        self.ts = np.zeros(capacity, dtype=np.float64)
        self.sources: list = [None] * capacity
        self.end = 0
        self.seen = 0  # points ever pushed (saturates nowhere; only compared with L)
        self.pending = 0  # points pushed since the last emitted request
        self.max_ts = -np.inf
        self.last_active = 0.0  # store clock at the last push

    @property
    def last_source(self) -> Any:
        """The source of the point written last (None before any)."""
        return self.sources[self.end - 1] if self.end else None

    def _make_room(self, m: int) -> None:
        """Room for m more points (m <= spare): the last L points move to the front when the buffer is full."""
        end = self.end
        if end + m <= len(self.ts):
            return
        keep = min(end, self.window)
        self.values[:keep] = self.values[end - keep:end]  # numpy copies overlapping ranges correctly
        self.ts[:keep] = self.ts[end - keep:end]
        self.sources[:keep] = self.sources[end - keep:end]
        self.end = keep

    def write(self, ts: float, values: np.ndarray, source: Any) -> None:
        if self.end == len(self.ts):
            self._make_room(1)
        end = self.end
        self.values[end] = values
        self.ts[end] = ts
        self.sources[end] = source
        self.end = end + 1
        self.seen += 1
        self.pending += 1
        if ts > self.max_ts:
            self.max_ts = ts

    def extend(self, entity: str, rows: np.ndarray, ts: np.ndarray, sources: list, stride: int,
               emitted: list[tuple[int, WindowRequest]]) -> None:
        """Append m points (pending < stride) with non-decreasing timestamps, none late; append (index in the block,
        request) to `emitted` after every point that completes a stride. A block that fits the spare rows is written
        in place (each request copies its window, edge-padded while warming up); a larger one, for a warm ring only,
        is joined to the window once and its requests are slices of that (the buffer then keeps the last L points)."""
        L, m, end = self.window, len(ts), self.end
        first = stride - self.pending - 1  # the block's first point that completes a stride
        if m <= self.spare:
            self._make_room(m)
            end = self.end
            self.values[end:end + m] = rows
            self.ts[end:end + m] = ts
            self.sources[end:end + m] = sources
            values, times, held, offset = self.values, self.ts, self.sources, end
        else:
            values = np.concatenate((self.values[end - L:end], rows))  # [L + m, C]
            times = np.concatenate((self.ts[end - L:end], ts))
            held = self.sources[end - L:end] + list(sources)
            offset = L
        for k in range(first, m, stride):
            last = offset + k + 1
            if last < L:  # still warming up (in place: the points sit at [0, last))
                window, warm = self._padded(last), False
            else:
                window, warm = values[last - L:last], True
                window = window.copy() if values is self.values else window
            emitted.append((k, WindowRequest(entity, window, stride, times[last - stride:last].copy(),
                                             held[last - stride:last], warm)))
        if values is self.values:
            self.end = end + m
        else:
            self.values[:L], self.ts[:L], self.sources[:L] = values[m:], times[m:], held[m:]
            self.end = L
        self.pending += m - stride * len(range(first, m, stride))
        self.seen += m
        newest = float(ts[-1])
        if newest > self.max_ts:
            self.max_ts = newest

    def emit(self, entity: str, n_new: int) -> WindowRequest:
        """The request for the newest n_new points (n_new <= pending), a copy of the window."""
        L, end = self.window, self.end
        self.pending -= n_new
        ts, sources = self.ts[end - n_new:end].copy(), self.sources[end - n_new:end]
        if self.seen < L:  # still warming up: the points sit at [0, end)
            return WindowRequest(entity, self._padded(end), n_new, ts, sources, False)
        return WindowRequest(entity, self.values[end - L:end].copy(), n_new, ts, sources, True)

    def _padded(self, n: int) -> np.ndarray:
        """A warming-up window of the first n points (n < L), edge-padded: the first point repeated at the front."""
        return self.values[np.concatenate((np.zeros(self.window - n, dtype=np.int64), np.arange(n)))]

    def pending_sources(self) -> list:
        return self.sources[self.end - self.pending:self.end]

    def state(self) -> dict:
        """values [L, C], ts [L], sources [L] in ring layout (point i in slot i mod L, unwritten slots zero / None),
        with pos, seen, pending, max_ts: the checkpoint form."""
        L, end = self.window, self.end
        if self.seen >= L:  # the oldest held point goes to slot seen mod L: the window's two parts swap places
            cut = end - self.seen % L  # the points from here on sit in slots 0, 1, ...
            values = np.concatenate((self.values[cut:end], self.values[end - L:cut]))
            ts = np.concatenate((self.ts[cut:end], self.ts[end - L:cut]))
            sources = self.sources[cut:end] + self.sources[end - L:cut]
        else:  # warming up: the points are in slots 0 .. seen - 1 already
            values = np.zeros((L, self.values.shape[1]), dtype=np.float32)
            values[:end] = self.values[:end]
            ts = np.zeros(L, dtype=np.float64)
            ts[:end] = self.ts[:end]
            sources = self.sources[:end] + [None] * (L - end)
        return {"values": values, "ts": ts, "sources": sources, "pos": self.seen % L, "seen": self.seen,
                "pending": self.pending, "max_ts": float(self.max_ts)}

    def load(self, values: np.ndarray, ts: np.ndarray, sources: list, pos: int, seen: int, pending: int,
             max_ts: float) -> None:
        """The inverse of `state`: a ring-layout window back into the linear buffer."""
        L = self.window
        held = min(seen, L)
        slots = (np.arange(L - held, L) + pos) % L  # oldest first: the held points end at slot pos - 1
        self.values[:held] = values[slots]
        self.ts[:held] = ts[slots]
        self.sources[:held] = [sources[slot] for slot in slots.tolist()]
        self.end, self.seen, self.pending, self.max_ts = held, seen, pending, max_ts
