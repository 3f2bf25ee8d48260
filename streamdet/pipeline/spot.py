"""SPOT (Siffer et al., KDD 2017): a threshold from peaks over an initial level, refitted online with a GPD tail.

One entity's instance; pipeline/thresholds.py's ThresholdBank keeps one per entity and drives the batch protocol
(step_rows) that pipeline/percentile.py's RollingPercentile shares. Alarms never join the peaks.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Sequence

import numpy as np

from .gpd import GPDFit, fit_gpd, tail_quantile

MAX_PEAKS = 2000  # bounded peak buffer: memory per entity stays constant, old peaks age out
REFIT_EVERY = 10  # new peaks between two GPD refits at least (a refit costs milliseconds: O(peaks) x grid)...
REFIT_SHARE = 10  # ...and at least 1/REFIT_SHARE of the peaks held: the fit then costs O(grid) per new peak, not
#                   O(peaks); 10 % new data moves a maximum-likelihood fit of thousands of peaks very little


class Spot:
    """SPOT (Siffer et al., KDD 2017): z_q from a GPD fitted to excesses over an initial threshold t.

    z_q changes only when the GPD is refitted, so `step` judges and learns the points between two refits at once
    (numpy) and is still exactly the one-point-at-a-time algorithm; `step_rows` does the same for a whole scored
    batch of chunks, one row each, and hands a row to `step` only when a refit falls inside it."""

    def __init__(self, init_threshold: float, peaks: Sequence[float], n_init: int, risk: float,
                 n_peaks: int | None = None, max_peaks: int = MAX_PEAKS, refit_every: int = REFIT_EVERY,
                 fit: GPDFit | None = None):
        """`fit`: the GPD fit of exactly these peaks, when known (a bundle's calibration stores it: a thousand
        per-entity bundles then start serving without a thousand fits); None fits them now."""
        self.t = float(init_threshold)
        self.risk = risk
        self.refit_every = refit_every
        self.peaks: deque[float] = deque((float(p) for p in peaks), maxlen=max(max_peaks, 1))
        self.n_peaks = len(self.peaks) if n_peaks is None else int(n_peaks)  # N_t: all peaks ever, not only kept
        self.n = max(int(n_init), self.n_peaks)  # observations ever seen (alarms excluded)
        self.since_fit = 0
        self.fit = GPDFit(0.0, 1.0, "exponential")
        self.z = self.t
        if fit is None:
            self.refit()
        else:
            self._use(fit)

    def __deepcopy__(self, memo: dict) -> "Spot":
        """A new entity's copy of the prototype. Every other attribute is an immutable value and the peaks are
        floats, so a new deque is a deep copy; the generic deepcopy visited each float (0.5 ms per new entity:
        seconds of the daemon's loop when a fleet of 10,000 hosts arrives, tools/bench_fleet.py g2)."""
        clone = copy.copy(self)
        clone.peaks = deque(self.peaks, maxlen=self.peaks.maxlen)
        return clone

    def refit(self) -> None:
        self._use(fit_gpd(np.fromiter(self.peaks, dtype=np.float64, count=len(self.peaks))))

    def _use(self, fit: GPDFit) -> None:
        """z_q from a GPD fit of the peaks held now."""
        self.fit = fit
        z = tail_quantile(self.t, fit, self.risk, self.n, self.n_peaks)
        self.z = z if math.isfinite(z) else self.t + max(self.peaks, default=0.0)
        self.since_fit = 0

    def refit_due(self) -> int:
        """New peaks after which the GPD is refitted."""
        return max(self.refit_every, len(self.peaks) // REFIT_SHARE)

    def step(self, scores: np.ndarray, learn: np.ndarray, protect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Judge a chunk (float64 [n]) against z_q, point after point, and learn the points marked in `learn` [n];
        where `protect` [n], alarms (score > z_q) stay out of the model, so an incident cannot raise its own
        threshold. -> (thresholds [n] each point was judged against, over [n])."""
        n = scores.size
        thresholds, over = np.empty(n, dtype=np.float64), np.empty(n, dtype=bool)
        start = 0
        while start < n:  # one pass per GPD refit inside the chunk
            part = scores[start:]
            judged = part > self.z
            kept = learn[start:] & ~(judged & protect[start:])
            peak = kept & (part > self.t)
            seen = np.cumsum(peak)  # [m] peaks learned up to and including each point
            held = np.minimum(self.peaks.maxlen, len(self.peaks) + seen)
            refits = np.flatnonzero(peak & (self.since_fit + seen >= np.maximum(self.refit_every,
                                                                                  held // REFIT_SHARE)))
            end = int(refits[0]) + 1 if refits.size else part.size
            thresholds[start:start + end], over[start:start + end] = self.z, judged[:end]
            self._absorb(int(kept[:end].sum()), part[:end][peak[:end]])
            if refits.size:
                self.refit()
            start += end
        return thresholds, over

    @staticmethod
    def step_rows(spots: list["Spot"], scores: np.ndarray, learn: np.ndarray,
                  protect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`step` for every row of a batch (float64 [B, n]; row b is the next chunk of spots[b], rows in stream
        order; the same Spot may hold several rows). The verdicts and the learned counts of all rows are computed
        at once; a row whose chunk contains a refit, or whose Spot changed since (an earlier row refitted it),
        takes `step`. -> (thresholds [B, n], over [B, n])."""
        z = np.array([spot.z for spot in spots], dtype=np.float64)  # [B]
        t = np.array([spot.t for spot in spots], dtype=np.float64)  # [B]
        over = scores > z[:, None]  # [B, n]
        kept = learn & ~(over & protect)  # [B, n]
        peak = kept & (scores > t[:, None])  # [B, n]
        n_kept, n_peak = kept.sum(axis=1).tolist(), peak.sum(axis=1).tolist()
        thresholds = np.repeat(z[:, None], scores.shape[1], axis=1)  # [B, n]
        for b, spot in enumerate(spots):
            if spot.z != z[b] or spot.since_fit + n_peak[b] >= spot.refit_due():  # refit_due only grows with peaks
                thresholds[b], over[b] = spot.step(scores[b], learn[b], protect[b])
            elif n_kept[b]:
                spot._absorb(n_kept[b], scores[b][peak[b]])
        return thresholds, over

    def _absorb(self, n_kept: int, peak_scores: np.ndarray) -> None:
        """Learn `n_kept` points, of which `peak_scores` exceed t (no refit falls among them)."""
        self.n += n_kept
        if peak_scores.size:
            self.peaks.extend((peak_scores - self.t).tolist())
            self.n_peaks += peak_scores.size
            self.since_fit += peak_scores.size

    def state_dict(self) -> dict:
        return {"peaks": np.fromiter(self.peaks, dtype=np.float64), "n": self.n, "n_peaks": self.n_peaks,
                "since_fit": self.since_fit, "gamma": self.fit.gamma, "sigma": self.fit.sigma,
                "method": self.fit.method, "z": self.z, "t": self.t}

    def load_state(self, state: dict) -> None:
        self.peaks = deque((float(p) for p in state["peaks"]), maxlen=self.peaks.maxlen)
        self.n, self.n_peaks, self.since_fit = int(state["n"]), int(state["n_peaks"]), int(state["since_fit"])
        self.fit = GPDFit(float(state["gamma"]), float(state["sigma"]), str(state["method"]))
        self.z, self.t = float(state["z"]), float(state["t"])
