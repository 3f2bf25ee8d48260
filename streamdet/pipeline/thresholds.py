"""Adaptive per-entity thresholds: SPOT (peaks over threshold) or a rolling percentile.

Both start from the bundle's calibration (validation scores, never test data) and adapt online to each entity's own
scores. Anomalous scores never teach the threshold: SPOT leaves alarms out of its peaks, the percentile clips them to
the current threshold. ThresholdBank keeps one instance per entity, created on first use by copying a prototype
fitted once from the shared calibration.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Sequence

import numpy as np
from river import stats

from ..config import ThresholdConfig
from ..errors import BundleError
from .gpd import GPDFit, fit_gpd, tail_quantile

MAX_PEAKS = 2000  # bounded peak buffer: memory per entity stays constant, old peaks age out
REFIT_EVERY = 10  # new peaks between two GPD refits at least (a refit costs milliseconds: O(peaks) x grid)...
REFIT_SHARE = 10  # ...and at least 1/REFIT_SHARE of the peaks held: the fit then costs O(grid) per new peak, not
#                   O(peaks); 10 % new data moves a maximum-likelihood fit of thousands of peaks very little
PERCENTILE_WINDOW = 2000  # scores the rolling percentile remembers


class Spot:
    """SPOT (Siffer et al., KDD 2017): z_q from a GPD fitted to excesses over an initial threshold t."""

    def __init__(self, init_threshold: float, peaks: Sequence[float], n_init: int, risk: float,
                 n_peaks: int | None = None, max_peaks: int = MAX_PEAKS, refit_every: int = REFIT_EVERY):
        self.t = float(init_threshold)
        self.risk = risk
        self.refit_every = refit_every
        self.peaks: deque[float] = deque((float(p) for p in peaks), maxlen=max(max_peaks, 1))
        self.n_peaks = len(self.peaks) if n_peaks is None else int(n_peaks)  # N_t: all peaks ever, not only kept
        self.n = max(int(n_init), self.n_peaks)  # observations ever seen (alarms excluded)
        self.since_fit = 0
        self.fit = GPDFit(0.0, 1.0, "exponential")
        self.z = self.t
        self.refit()

    def refit(self) -> None:
        self.fit = fit_gpd(np.fromiter(self.peaks, dtype=np.float64, count=len(self.peaks)))
        z = tail_quantile(self.t, self.fit, self.risk, self.n, self.n_peaks)
        self.z = z if math.isfinite(z) else self.t + max(self.peaks, default=0.0)
        self.since_fit = 0

    def refit_due(self) -> int:
        """New peaks after which the GPD is refitted."""
        return max(self.refit_every, len(self.peaks) // REFIT_SHARE)

    def step(self, score: float, learn: bool, protect: bool) -> tuple[float, bool]:
        """Decide `score` against the current z_q, then (if learning) add it to the model.

        protect=True keeps alarms (score > z_q) out of the peaks, so an incident cannot raise its own threshold.
        """
        z, over = self.z, score > self.z
        if not learn or (over and protect):
            return z, over
        self.n += 1
        if score > self.t:
            self.peaks.append(score - self.t)
            self.n_peaks += 1
            self.since_fit += 1
            if self.since_fit >= self.refit_due():
                self.refit()
        return z, over

    def step_many(self, scores: np.ndarray, learn: bool, protect: bool) -> np.ndarray | None:
        """`step` over a chunk at once -> over [n], judged against the current z_q; None (nothing changed) when a
        GPD refit would fall inside the chunk, so the caller steps point by point and the result stays identical."""
        over = scores > self.z  # [n]
        if not learn:
            return over
        kept = scores[~over] if protect else scores  # alarms never teach the threshold
        excess = kept[kept > self.t] - self.t
        if self.since_fit + excess.size >= self.refit_due():
            return None
        self.n += kept.size
        self.peaks.extend(excess.tolist())
        self.n_peaks += excess.size
        self.since_fit += excess.size
        return over

    def state_dict(self) -> dict:
        return {"peaks": np.fromiter(self.peaks, dtype=np.float64), "n": self.n, "n_peaks": self.n_peaks,
                "since_fit": self.since_fit, "gamma": self.fit.gamma, "sigma": self.fit.sigma,
                "method": self.fit.method, "z": self.z, "t": self.t}

    def load_state(self, state: dict) -> None:
        self.peaks = deque((float(p) for p in state["peaks"]), maxlen=self.peaks.maxlen)
        self.n, self.n_peaks, self.since_fit = int(state["n"]), int(state["n_peaks"]), int(state["since_fit"])
        self.fit = GPDFit(float(state["gamma"]), float(state["sigma"]), str(state["method"]))
        self.z, self.t = float(state["z"]), float(state["t"])


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
        for v in sample:
            self._learn(float(v))

    def _learn(self, value: float) -> None:
        self.values.append(value)
        self._quantile.update(value)

    @property
    def threshold(self) -> float:
        value = self._quantile.get()
        return math.inf if value is None else float(value)

    def step(self, score: float, learn: bool, protect: bool) -> tuple[float, bool]:
        z = self.threshold
        over = score > z
        if learn:
            self._learn(min(score, z) if over and protect else score)
        return z, over

    def step_many(self, scores: np.ndarray, learn: bool, protect: bool) -> np.ndarray | None:
        """The threshold moves with every learned score: only a chunk that teaches nothing is judged at once."""
        return scores > self.threshold if not learn else None

    @property
    def z(self) -> float:
        return self.threshold

    def state_dict(self) -> dict:
        return {"values": np.fromiter(self.values, dtype=np.float64)}

    def load_state(self, state: dict) -> None:
        self.values = deque(maxlen=self.window)
        self._quantile = stats.RollingQuantile(q=self.q, window_size=self.window)
        for v in state["values"]:
            self._learn(float(v))


class ThresholdBank:
    """One threshold per entity, lazily copied from a prototype built from the bundle calibration.

    The first `warmup` learned points of an entity never count as over the threshold and are learned unprotected
    (like SPOT's initial batch, they are taken as normal data for the entity's own tail).
    """

    def __init__(self, cfg: ThresholdConfig, calibration: dict):
        self.cfg = cfg
        self._prototype = _build(cfg, calibration)
        self._entities: dict[str, Spot | RollingPercentile] = {}
        self._learned: dict[str, int] = {}

    def _get(self, entity: str) -> Spot | RollingPercentile:
        detector = self._entities.get(entity)
        if detector is None:
            detector = self._entities[entity] = copy.deepcopy(self._prototype)
            self._learned[entity] = 0
        return detector

    def update(self, entity: str, score: float, learn: bool = True) -> tuple[float, bool]:
        """-> (threshold the score was judged against, over). learn=False judges without adapting (warm-up windows)."""
        detector = self._get(entity)
        warming = self._learned[entity] < self.cfg.warmup
        threshold, over = detector.step(float(score), learn=learn and self.cfg.update, protect=not warming)
        if learn:
            self._learned[entity] += 1  # counts toward warm-up even when threshold.update is off
        return threshold, over and not warming

    def update_many(self, entity: str, scores: np.ndarray, learn: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """`update` for a chunk of one entity's finite scores (float64 [n]) -> (thresholds [n], over [n]); vectorised
        unless the chunk crosses the end of warm-up or a refit, where it steps point by point (same result)."""
        detector = self._get(entity)
        learned, n = self._learned[entity], scores.size
        warming = learned < self.cfg.warmup
        if not (warming and learn and learned + n > self.cfg.warmup):  # the warm-up state is the same for all n
            threshold = detector.z
            over = detector.step_many(scores, learn=learn and self.cfg.update, protect=not warming)
            if over is not None:
                if learn:
                    self._learned[entity] = learned + n
                return np.full(n, threshold), (over & (not warming))
        pairs = [self.update(entity, score, learn) for score in scores.tolist()]
        return np.array([t for t, _ in pairs], dtype=np.float64), np.array([o for _, o in pairs], dtype=bool)

    def update_rows(self, entities: list[str], scores: np.ndarray, learn: list[bool]) -> tuple[np.ndarray, np.ndarray]:
        """`update_many` for every row of a scored batch (scores float64 [B, n], finite; row b is the next chunk of
        entities[b], rows in stream order) -> (thresholds [B, n], over [B, n]), identical to calling update_many row
        by row. The verdicts and the counts of learned points and peaks are computed for the whole batch at once; a
        row then only moves its entity's counters, unless it refits, crosses the end of warm-up, belongs to a
        rolling percentile, or follows a row of the same entity that changed its threshold: those take update_many."""
        detectors = [self._get(entity) for entity in entities]
        z = np.array([detector.z for detector in detectors], dtype=np.float64)  # [B]
        t = np.array([getattr(detector, "t", math.inf) for detector in detectors], dtype=np.float64)  # [B]
        over = scores > z[:, None]  # [B, n]
        peaks = ~over & (scores > t[:, None])  # [B, n]: learned points above the initial threshold (protected)
        n_kept, n_peaks = (~over).sum(axis=1).tolist(), peaks.sum(axis=1).tolist()
        thresholds = np.repeat(z[:, None], scores.shape[1], axis=1)  # [B, n]
        n, warmup, adapt = scores.shape[1], self.cfg.warmup, self.cfg.update
        for b, (entity, detector) in enumerate(zip(entities, detectors)):
            learned = self._learned[entity]
            simple = (type(detector) is Spot and detector.z == z[b] and learned >= warmup
                      and not (learn[b] and adapt and detector.since_fit + n_peaks[b] >= detector.refit_due()))
            if not simple:
                thresholds[b], over[b] = self.update_many(entity, scores[b], learn[b])
                continue
            if not learn[b]:
                continue
            self._learned[entity] = learned + n
            if adapt:
                detector.n += n_kept[b]
                if n_peaks[b]:
                    detector.peaks.extend((scores[b][peaks[b]] - detector.t).tolist())
                    detector.n_peaks += n_peaks[b]
                    detector.since_fit += n_peaks[b]
        return thresholds, over

    def current(self, entity: str) -> float:
        """The entity's threshold now (the shared prototype's for an entity not seen yet)."""
        return self._entities.get(entity, self._prototype).z

    def remove(self, entity: str) -> None:
        self._entities.pop(entity, None)
        self._learned.pop(entity, None)

    def state_dict(self, entity: str) -> dict:
        return {"method": self.cfg.method, "learned": self._learned.get(entity, 0),
                "detector": self._get(entity).state_dict()}

    def load_state(self, entity: str, state: dict) -> None:
        if state.get("method") != self.cfg.method:
            raise BundleError(f"threshold state of {entity!r} is for method {state.get('method')!r}, "
                              f"config has threshold.method={self.cfg.method!r}")
        self._get(entity).load_state(state["detector"])
        self._learned[entity] = int(state["learned"])


def _build(cfg: ThresholdConfig, calibration: dict) -> Spot | RollingPercentile:
    """The prototype threshold from calibration; BundleError when calibration lacks what the method needs."""
    sample = [float(v) for v in calibration.get("sample") or []]
    if cfg.method == "percentile":
        if not sample:
            raise BundleError("calibration.sample is empty: the percentile threshold needs validation scores")
        return RollingPercentile(sample, cfg.percentile)
    pot = calibration.get("pot") or {}
    if pot.get("peaks"):
        return Spot(pot["init_threshold"], pot["peaks"], int(pot.get("n_init", calibration.get("n", 0))), cfg.risk,
                    n_peaks=pot.get("n_peaks"))
    if not sample:
        raise BundleError("calibration has neither pot.peaks nor sample: cannot initialise the POT threshold")
    values = np.asarray(sample, dtype=np.float64)
    t = float(np.quantile(values, cfg.init_level))
    return Spot(t, values[values > t] - t, len(values), cfg.risk)
