"""Adaptive per-entity thresholds: SPOT (peaks over threshold) or a rolling percentile.

Both start from the bundle's calibration (validation scores, never test data) and adapt online to each entity's own
scores. Anomalous scores never teach the threshold: SPOT leaves alarms out of its peaks, the percentile clips them to
the current threshold. ThresholdBank keeps one instance per entity, created on first use by copying its bundle's
prototype, built once per bundle from its calibration (at start-up: `prepare`; from the GPD fit training stored).
The two kinds are pipeline/spot.py and pipeline/percentile.py; they share the batch protocol the bank drives.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..config import ThresholdConfig
from ..errors import BundleError
from .gpd import stored_fit
from .percentile import RollingPercentile
from .spot import MAX_PEAKS, Spot


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


class ResolveLevels:
    """entity -> the score an open alert must fall under to resolve (`alerting.resolve_quantile`): that quantile of
    the validation scores its bundle was calibrated on (the calibration sample, on the thresholds' own scale), once
    per bundle. An alert then stays open while its anomaly keeps the score elevated, not only over the threshold.
    The served bundles' levels are computed at once, so a calibration without scores is refused at start-up or
    reload (BundleError), not in the middle of a batch."""

    def __init__(self, quantile: float, calibration_of: Callable[[str], tuple[str, dict]],
                 calibrations: Iterable[tuple[str, dict]] = ()):
        self.quantile = quantile
        self._calibration_of = calibration_of
        self._levels = {key: resolve_level(calibration, quantile) for key, calibration in calibrations}

    def __call__(self, entity: str) -> float:
        key, calibration = self._calibration_of(entity)
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = resolve_level(calibration, self.quantile)
        return level


def resolve_level(calibration: dict, quantile: float) -> float:
    """The `quantile` of a calibration's validation scores; BundleError when it holds none."""
    sample = calibration.get("sample") or []
    if not sample:
        raise BundleError("calibration.sample is empty: alerting.resolve_quantile needs validation scores")
    return float(np.quantile(np.asarray(sample, dtype=np.float64), quantile))
