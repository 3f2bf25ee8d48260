"""One entity's ring buffer of the last L points, and the window request it emits (pipeline/windows.py keeps one
ring per entity)."""

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


class Ring:
    """One entity's buffer: values [L, C], timestamps [L], sources [L]; `pos` is the next slot to write."""

    def __init__(self, window: int, n_channels: int):
        self.values = np.zeros((window, n_channels), dtype=np.float32)  # [L, C]
        self.ts = np.zeros(window, dtype=np.float64)  # [L]
        self.sources: list = [None] * window  # [L]
        self.pos = 0
        self.seen = 0  # points ever pushed (saturates nowhere; only compared with L)
        self.pending = 0  # points pushed since the last emitted request
        self.max_ts = -np.inf
        self.last_active = 0.0  # store clock at the last push

    def write(self, ts: float, values: np.ndarray, source: Any) -> None:
        pos = self.pos
        self.values[pos] = values
        self.ts[pos] = ts
        self.sources[pos] = source
        self.pos = pos + 1 if pos + 1 < len(self.sources) else 0
        self.seen += 1
        self.pending += 1
        if ts > self.max_ts:
            self.max_ts = ts

    def ordered(self) -> tuple[np.ndarray, np.ndarray, list]:
        """(values [L, C], ts [L], sources [L]) oldest first, for a ring that has seen at least L points."""
        pos = self.pos
        return (np.concatenate((self.values[pos:], self.values[:pos])), np.concatenate((self.ts[pos:], self.ts[:pos])),
                self.sources[pos:] + self.sources[:pos])

    def ordered_index(self) -> np.ndarray:
        """Slot indices of the window oldest first; edge-padded with the first slot while not yet full."""
        L = len(self.ts)
        if self.seen >= L:
            return (np.arange(L) + self.pos) % L
        return np.concatenate([np.zeros(L - self.seen, dtype=np.int64), np.arange(self.seen)])

    def emit(self, entity: str, n_new: int) -> WindowRequest:
        L, pos = len(self.ts), self.pos
        self.pending -= n_new
        if self.seen < L:  # edge-padded warm-up window: the general (index) path
            idx = self.ordered_index()
            new = idx[L - n_new:]
            return WindowRequest(entity=entity, window=self.values[idx], n_new=n_new, ts=self.ts[new].copy(),
                                 sources=[self.sources[i] for i in new], warm=False)
        window = np.concatenate((self.values[pos:], self.values[:pos]))  # [L, C] oldest first: two slices, no index
        start = pos - n_new  # slot of the oldest new point (negative: it wraps)
        if start >= 0:
            ts, sources = self.ts[start:pos].copy(), self.sources[start:pos]
        else:
            ts = np.concatenate((self.ts[start:], self.ts[:pos]))
            sources = self.sources[start:] + self.sources[:pos]
        return WindowRequest(entity=entity, window=window, n_new=n_new, ts=ts, sources=sources, warm=True)

    def pending_sources(self) -> list:
        L = len(self.ts)
        return [self.sources[(self.pos - k) % L] for k in range(self.pending, 0, -1)]
