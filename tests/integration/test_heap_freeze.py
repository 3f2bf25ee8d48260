"""The daemon freezes the heap as its fleet grows (serve/heap.py GrowthFreezer): entity states leave the cyclic
collector's full passes, at geometric growth only."""

from __future__ import annotations

import gc

from streamdet.serve.heap import FREEZE_MIN_NEW, GrowthFreezer


def test_entity_states_are_frozen_at_geometric_growth_of_the_fleet():
    freezer = GrowthFreezer()
    try:
        assert not freezer.entities_served(FREEZE_MIN_NEW - 1)  # a small fleet: the start-up freeze is enough
        states = [{"entity": f"host-{i}", "ring": [float(i)]} for i in range(FREEZE_MIN_NEW)]
        before = gc.get_freeze_count()
        assert freezer.entities_served(len(states))
        assert gc.get_freeze_count() >= before + 2 * len(states)  # each state's dict and list left the collector
        assert not freezer.entities_served(len(states) + FREEZE_MIN_NEW // 2)  # neither a quarter nor the minimum
        assert freezer.entities_served(2 * FREEZE_MIN_NEW)
        big = 40 * FREEZE_MIN_NEW
        assert freezer.entities_served(big) and not freezer.entities_served(big * 5 // 4 - 1)  # a quarter, not more
        assert freezer.entities_served(big * 5 // 4)
    finally:
        gc.unfreeze()
