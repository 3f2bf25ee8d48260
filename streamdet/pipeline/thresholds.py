"""Adaptive per-entity thresholds: SPOT (peaks over threshold) or a rolling percentile.

Both start from the bundle's calibration (validation scores, never test data) and adapt online to each entity's own
scores. Anomalous scores never teach the threshold: SPOT leaves alarms out of its peaks, the percentile clips them to
the current threshold. ThresholdBank keeps one instance per entity, created on first use by copying its bundle's
prototype, built once per bundle from its calibration (at start-up: `prepare`; from the GPD fit training stored).
A little over 300 lines: the two threshold kinds share the batch protocol that the bank drives.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from river import stats

from ..config import ThresholdConfig
from ..errors import BundleError
from .gpd import GPDFit, fit_gpd, stored_fit, tail_quantile

MAX_PEAKS = 2000  # bounded peak buffer: memory per entity stays constant, old peaks age out
REFIT_EVERY = 10  # new peaks between two GPD refits at least (a refit costs milliseconds: O(peaks) x grid)...
REFIT_SHARE = 10  # ...and at least 1/REFIT_SHARE of the peaks held: the fit then costs O(grid) per new peak, not
#                   O(peaks); 10 % new data moves a maximum-likelihood fit of thousands of peaks very little
PERCENTILE_WINDOW = 2000  # scores the rolling percentile remembers


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


class ThresholdBank:
    """One threshold per entity, lazily copied from a prototype built from the bundle calibration.

    The first `warmup` learned points of an entity never count as over the threshold and are learned unprotected
    (like SPOT's initial batch, they are taken as normal data for the entity's own tail).
    """

    def __init__(self, cfg: ThresholdConfig, calibration: dict,
                 calibration_of: Optional[Callable[[str], tuple[str, dict]]] = None):
        self.cfg = cfg
        self._prototype = _build(cfg, calibration)
        self._calibration_of = calibration_of  # entity -> (key, calibration) when entities have their own bundles
        self._prototypes: dict[str, Spot | RollingPercentile] = {}
        self._entities: dict[str, Spot | RollingPercentile] = {}
        self._learned: dict[str, int] = {}

    def prepare(self, calibrations: Iterable[tuple[str, dict]]) -> None:
        """Build the starting threshold of each served bundle now, (key, calibration) pairs as `calibration_of`
        gives them: at start-up and at a reload, not at the first score of each bundle's first entity (a bundle
        without a stored GPD fit is fitted here, ~0.5-1 ms each). Those of bundles no longer served are dropped."""
        built = {}
        for key, calibration in calibrations:
            prototype = self._prototypes.get(key)
            built[key] = prototype if prototype is not None else _build(self.cfg, calibration)
        self._prototypes = built

    @property
    def prepared(self) -> set[str]:
        """Keys of the bundles whose starting threshold is built."""
        return set(self._prototypes)

    def _get(self, entity: str) -> Spot | RollingPercentile:
        detector = self._entities.get(entity)
        if detector is None:
            detector = self._entities[entity] = copy.deepcopy(self._prototype_of(entity))
            self._learned[entity] = 0
        return detector

    def _prototype_of(self, entity: str) -> Spot | RollingPercentile:
        """The fitted threshold a new entity starts from: its own bundle's calibration, or the shared one."""
        if self._calibration_of is None:
            return self._prototype
        key, calibration = self._calibration_of(entity)
        prototype = self._prototypes.get(key)
        if prototype is None:
            prototype = self._prototypes[key] = _build(self.cfg, calibration)
        return prototype

    def decide(self, entities: Sequence[str], scores: np.ndarray, learn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Judge a batch of chunks: scores float64 [B, n], row b the next n scores of entities[b] (rows in stream
        order; an entity may hold several). learn bool [B, n] marks the points that may adapt the threshold (not
        warm-up windows, not non-finite scores); the others are judged only. A single score is a batch of one.
        -> (thresholds [B, n] each score was judged against, over [B, n])."""
        detectors = [self._get(entity) for entity in entities]
        warming = self._count_learned(entities, learn)  # [B, n] or None
        protect = np.ones_like(learn) if warming is None else ~warming
        adapt = learn if self.cfg.update else np.zeros_like(learn)
        thresholds, over = type(self._prototype).step_rows(detectors, scores, adapt, protect)
        return thresholds, (over if warming is None else over & protect)

    def _count_learned(self, entities: Sequence[str], learn: np.ndarray) -> np.ndarray | None:
        """Advance each entity's count of learned points (threshold.warmup counts them even without
        threshold.update); -> the points judged while their entity was warming up, or None when none was."""
        counts, warmup, warming = learn.sum(axis=1).tolist(), self.cfg.warmup, None
        for b, entity in enumerate(entities):
            before = self._learned[entity]
            if before < warmup:
                if warming is None:
                    warming = np.zeros(learn.shape, dtype=bool)
                warming[b] = before + np.cumsum(learn[b]) - learn[b] < warmup  # learned before each point
            self._learned[entity] = before + counts[b]
        return warming

    def current(self, entity: str) -> float:
        """The entity's threshold now (the shared prototype's for an entity not seen yet)."""
        detector = self._entities.get(entity)
        return (detector if detector is not None else self._prototype_of(entity)).z

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
        # A shallow copy of the prototype is enough, as load_state replaces every mutable part (deep-copying its
        # peaks was a quarter of a restore's time); it joins the bank only once loaded, never half-shared.
        detector = copy.copy(self._prototype_of(entity))
        detector.load_state(state["detector"])
        learned = int(state["learned"])
        self._entities[entity], self._learned[entity] = detector, learned


def _build(cfg: ThresholdConfig, calibration: dict) -> Spot | RollingPercentile:
    """The prototype threshold from calibration; BundleError when calibration lacks what the method needs. A POT
    calibration's peaks come with their GPD fit where training stored it (`pot.gpd`); it is used only when it is
    this version's fit of these very peaks, so the thresholds are those a fit made here would give."""
    if cfg.method == "percentile":
        sample = [float(v) for v in calibration.get("sample") or []]
        if not sample:
            raise BundleError("calibration.sample is empty: the percentile threshold needs validation scores")
        return RollingPercentile(sample, cfg.percentile)
    pot = calibration.get("pot") or {}
    peaks = pot.get("peaks")
    if peaks:  # more peaks than a Spot holds: the stored fit is not of those held, they are fitted here
        fit = stored_fit(pot.get("gpd"), len(peaks)) if len(peaks) <= MAX_PEAKS else None
        return Spot(pot["init_threshold"], peaks, int(pot.get("n_init", calibration.get("n", 0))), cfg.risk,
                    n_peaks=pot.get("n_peaks"), fit=fit)
    sample = [float(v) for v in calibration.get("sample") or []]
    if not sample:
        raise BundleError("calibration has neither pot.peaks nor sample: cannot initialise the POT threshold")
    values = np.asarray(sample, dtype=np.float64)
    t = float(np.quantile(values, cfg.init_level))
    return Spot(t, values[values > t] - t, len(values), cfg.risk)
