"""The rolling percentile threshold: one entity's instance, driven by pipeline/thresholds.py's ThresholdBank through
the batch protocol SPOT (pipeline/spot.py) shares."""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np
from river import stats

PERCENTILE_WINDOW = 2000  # scores the rolling percentile remembers


class RollingPercentile:
    """The q-th percentile of the last `window` scores, via river.stats.RollingQuantile.

    Why rolling and not river's P² Quantile: a window forgets, so the threshold follows slow drift; it is exact over
    the window instead of a five-marker approximation; and its state is just the window's values, which makes
    checkpoints simple and exact. Alarms are clipped to the current threshold before being learned (not dropped):
    dropping every value above the q-quantile would make the threshold ratchet down, clipping keeps the count of
    high values right while an incident still cannot raise its own threshold.
    """

    def __init__(self, sample: Sequence[float], percentile: float, window: int = PERCENTILE_WINDOW):
        self.q = percentile / 100.0
        self.window = max(window, len(sample))
        self.values: deque[float] = deque(maxlen=self.window)
        self._quantile = stats.RollingQuantile(q=self.q, window_size=self.window)
        self.appended = 0  # values ever learned: a checkpoint delta carries only those appended since the last one
        for v in sample:
            self._learn(float(v))

    def _learn(self, value: float) -> None:
        self.values.append(value)
        self._quantile.update(value)
        self.appended += 1

    @property
    def threshold(self) -> float:
        value = self._quantile.get()
        return math.inf if value is None else float(value)

    def step(self, scores: np.ndarray, learn: np.ndarray, protect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As Spot.step. The threshold moves with every learned score, so learned points go one at a time."""
        if not learn.any():
            z = self.threshold
            return np.full(scores.size, z), scores > z
        thresholds, over = np.empty(scores.size, dtype=np.float64), np.empty(scores.size, dtype=bool)
        for j, (score, learned, protected) in enumerate(zip(scores.tolist(), learn.tolist(), protect.tolist())):
            z = self.threshold
            thresholds[j], over[j] = z, score > z
            if learned:
                self._learn(min(score, z) if over[j] and protected else score)
        return thresholds, over

    @staticmethod
    def step_rows(detectors: list["RollingPercentile"], scores: np.ndarray, learn: np.ndarray,
                  protect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As Spot.step_rows, row by row."""
        rows = [d.step(scores[b], learn[b], protect[b]) for b, d in enumerate(detectors)]
        return np.stack([t for t, _ in rows]), np.stack([o for _, o in rows])

    @property
    def z(self) -> float:
        return self.threshold

    def state_dict(self) -> dict:
        return {"values": np.fromiter(self.values, dtype=np.float64), "appended": self.appended}

    def load_state(self, state: dict) -> None:
        self.values = deque(maxlen=self.window)
        self._quantile = stats.RollingQuantile(q=self.q, window_size=self.window)
        for v in state["values"]:
            self._learn(float(v))
        self.appended = int(state.get("appended", len(self.values)))  # format-1 checkpoints had no counter
