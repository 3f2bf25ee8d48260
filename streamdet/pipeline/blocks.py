"""A poll's points sorted by entity once, so that each entity's block of points is one contiguous slice that its
buffer takes in one write (pipeline/windows.py; ring.py's Ring.extend): values, timestamps and sources are gathered
once per poll, not once per entity (with 1,000 entities: docs/performance.md, "The window store as a linear
buffer")."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .ring import Ring, WindowRequest


class PollBlocks:
    """The poll's values, timestamps and sources in entity order, and which blocks have non-decreasing timestamps
    (those need no lateness check per point)."""

    def __init__(self, groups: dict[str, list[int]], ts: list[float], values: np.ndarray, sources: list):
        """`groups`: entity -> the positions of its points in the poll, in order."""
        order = [k for positions in groups.values() for k in positions]
        self.start = {}
        at = 0
        for entity, positions in groups.items():
            self.start[entity] = at
            at += len(positions)
        self.values = values[order]  # [N, C]
        self.ts = np.asarray(ts, dtype=np.float64)[order]  # [N]
        self.sources = [sources[k] for k in order]
        descents = np.concatenate(([0], np.cumsum(self.ts[1:] < self.ts[:-1])))  # descents before each point
        self.descents = descents.tolist()

    def append_to(self, ring: Ring, entity: str, positions: list[int], stride: int,
                  lateness: float) -> Optional[list[tuple[int, WindowRequest]]]:
        """Append the entity's block to its ring; the requests it completed, as (position in the poll, request). None,
        with nothing done, when a point of the block could be late (the caller then takes the points one by one)."""
        a = self.start[entity]
        b = a + len(positions)
        if self.descents[b - 1] != self.descents[a] or self.ts[a] < ring.max_ts - lateness:
            return None
        emitted: list[tuple[int, WindowRequest]] = []
        ring.extend(entity, self.values[a:b], self.ts[a:b], self.sources[a:b], stride, emitted)
        return [(positions[j], request) for j, request in emitted]
