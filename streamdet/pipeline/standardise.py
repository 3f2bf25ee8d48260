"""Per-entity online score standardisation (`model.score.standardise`), between the scorer and the thresholds.

One bundle often serves many entities whose scores sit at different levels (a busy host errs more than an idle
one), and an entity's level drifts. When the bundle's calibration carries a "standardise" prior, each entity's
scores are re-expressed on the calibration's scale: out = prior mean + prior std x (s - m_e) / sd_e, where m_e and
sd_e are an exponentially weighted mean and spread of the entity's own past scores (memory `horizon` points),
started at the prior, so a new entity is scored exactly as calibrated. Points over `clip` (on the output scale)
never teach, so an anomaly does not standardise itself away. A chunk (one window's new points, at most a stride)
is judged with the statistics from before it, then teaches them point by point.

Training calibrates on validation scores passed through this very class (train/core.py), so the thresholds see on
the validation tails what they will see live; the daemon and the backtest share it through engine.Pipeline.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

HORIZON = 2000  # points of memory of an entity's score level
SPREAD_FLOOR = 0.1  # an entity's spread is at least this share of the prior's (a flat entity is not blown up)


def make_prior(scores: np.ndarray, horizon: int = HORIZON) -> dict:
    """The calibration's "standardise" entry from the pooled validation scores (raw model scores)."""
    s = np.asarray(scores, np.float64)
    return {"mean": float(s.mean()), "std": float(max(s.std(), 1e-12)), "clip": float(np.quantile(s, 0.99)),
            "horizon": int(horizon)}


class _Entity:
    __slots__ = ("mean", "square")

    def __init__(self, mean: float, square: float):
        self.mean, self.square = mean, square


class ScoreStandardiser:
    """Per-entity state; `prior_of(entity)` -> the prior dict of the entity's bundle, or None (scores pass as they
    are)."""

    def __init__(self, prior_of: Callable[[str], Optional[dict]], enabled: bool = True):
        self._prior_of = prior_of
        self.enabled = enabled  # False: no bundle carries a prior, and apply() returns the scores as they are
        self._entities: dict[str, _Entity] = {}

    def apply(self, entities: Sequence[str], scores: np.ndarray, learn: np.ndarray) -> np.ndarray:
        """scores float64 [B, n] (row b: the next n scores of entities[b], rows in stream order), learn bool [B, n]
        -> standardised scores [B, n]; rows of entities without a prior are returned unchanged."""
        if not self.enabled:
            return scores
        out = np.array(scores, dtype=np.float64, copy=True)
        for b, entity in enumerate(entities):
            prior = self._prior_of(entity)
            if prior is None:
                continue
            state = self._state(entity, prior)
            spread = np.sqrt(max(state.square - state.mean ** 2, 0.0))
            spread = max(spread, SPREAD_FLOOR * prior["std"], 1e-12)
            out[b] = prior["mean"] + prior["std"] * (out[b] - state.mean) / spread
            teach = learn[b] & np.isfinite(out[b]) & (out[b] <= prior["clip"])
            self._teach(state, np.asarray(scores[b], np.float64)[teach], prior["horizon"])
        return out

    def _state(self, entity: str, prior: dict) -> _Entity:
        state = self._entities.get(entity)
        if state is None:
            state = self._entities[entity] = _Entity(prior["mean"], prior["std"] ** 2 + prior["mean"] ** 2)
        return state

    @staticmethod
    def _teach(state: _Entity, values: np.ndarray, horizon: int) -> None:
        """Exponentially weighted update, one point at a time in closed form: after n points the old state keeps
        (1 - a)^n and point i weighs a (1 - a)^(n - 1 - i)."""
        n = values.size
        if not n:
            return
        a = 1.0 / horizon
        weights = a * (1.0 - a) ** np.arange(n - 1, -1, -1)
        keep = (1.0 - a) ** n
        state.mean = keep * state.mean + float(weights @ values)
        state.square = keep * state.square + float(weights @ (values * values))

    def remove(self, entity: str) -> None:
        self._entities.pop(entity, None)

    def state_dict(self, entity: str) -> Optional[dict]:
        state = self._entities.get(entity)
        return None if state is None else {"mean": state.mean, "square": state.square}

    def load_state(self, entity: str, state: Optional[dict]) -> None:
        if state:
            self._entities[entity] = _Entity(float(state["mean"]), float(state["square"]))


def standardise_stream(prior: dict, scores: np.ndarray, chunk: int) -> np.ndarray:
    """One fresh entity's scores [T] passed through ScoreStandardiser in chunks of `chunk` points, every point
    learnable: what calibration and the validation ranking use (the daemon's own path)."""
    standardiser = ScoreStandardiser(lambda _: prior)
    scores = np.asarray(scores, np.float64)
    parts = [standardiser.apply(["e"], scores[None, i:i + chunk], np.ones((1, len(scores[i:i + chunk])), bool))[0]
             for i in range(0, len(scores), max(1, chunk))]
    return np.concatenate(parts) if parts else scores.copy()
