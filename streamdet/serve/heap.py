"""Keeping the daemon's long-lived objects out of the cyclic garbage collector's full passes.

Every full collection walks every tracked object, on whichever thread triggered it (usually the loop). What lives as
long as the process (torch, the model, clients, config) or as long as an entity (its window, threshold and alert
state) only makes those passes longer, so it is moved to the permanent generation with gc.freeze (O(1)).
Refcounting still frees frozen objects; only garbage in reference cycles that was alive at a freeze is withheld from
the collector, which is why the freezes are few: once at start-up, after each model reload, and at geometric growth
of the fleet.
"""

from __future__ import annotations

import gc

FREEZE_MIN_NEW = 1000  # new entities before the heap is frozen again


def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the collector's reach: hundreds of thousands of objects, tenths of
    a second each full collection otherwise. Measured with tools/bench_pipeline.py: the largest single gain in end-to-
    end records/s."""
    gc.collect()
    gc.freeze()


def refreeze_after_reload() -> None:
    """The old model was part of the frozen heap: unfreeze so the collector can free it, then freeze again."""
    gc.unfreeze()
    freeze_startup_heap()


class GrowthFreezer:
    """Freezes the heap again whenever the entities served grew by a quarter (and by at least FREEZE_MIN_NEW). At
    10,000 hosts x 1 record per 10 s the full passes over every entity's state took 40-120 ms every few seconds, in
    the way of two thirds of the slowest 1 % of records (tools/latency_stages.py; 25-55 ms once frozen). At geometric
    growth it runs O(log n) times, so what it withholds from the collector stays bounded."""

    def __init__(self):
        self.frozen_at = 0  # entities served at the last freeze

    def entities_served(self, n: int) -> bool:
        if n < max(self.frozen_at * 5 // 4, self.frozen_at + FREEZE_MIN_NEW):
            return False
        self.frozen_at = n
        gc.freeze()
        return True
