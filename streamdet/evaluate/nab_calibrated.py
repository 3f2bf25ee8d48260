"""Per-file calibrated likelihoods: the values our detectors hand NAB's own protocol (one threshold for the corpus).

NAB's sweep puts ONE threshold over every file, so a value must mean the same thing in every file; NAB's detectors
hand it a per-file calibrated value in [0, 1] (HTM: its anomaly likelihood). Raw scores, or scores relative to an
operating threshold, do not: a file whose calibration is constant has threshold 0, and its every positive score sits
above every other file's (docs/evaluation.md). Here each score becomes its tail probability under the file's OWN
calibration (the bundle's validation scores, never the test split or labels):

- up to the POT initial threshold u, the empirical (conformal) rank p = (1 + #{calibration >= s}) / (m + 1);
- above u, min(that, the POT tail (n_peaks / n) x GPD survival of s - u), the GPD fitted to the bundle's peaks;
- a degenerate calibration (no excess over u: constant, or too flat to fit a tail) gets no extrapolation: any score
  above every calibration score has p = 1 / (m + 1), never 0, so a constant training head cannot put a file on top.

The value is p on a log scale, as HTM's log likelihood: log(p + 1e-10) / log(1e-10), clipped to [0, 1] (1: a tail
probability of 1e-10 or less). `episode_onsets` keeps, optionally, only the row where a value first exceeds the running
maximum of the previous `window` rows (0 elsewhere): one detection per episode, as the daemon's alerts fire. Both
were fixed before any test result was looked at; the report carries both (docs/evaluation.md).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from ..pipeline.gpd import fit_gpd, survival

LOG_FLOOR = 1e-10  # HTM's log-likelihood floor: tail probabilities below it all read as 1


def tail_probability(scores: np.ndarray, calibration: dict) -> np.ndarray:
    """P(calibration score >= s) for each s (see the module docstring); NaN where s is NaN."""
    sample = np.sort(np.asarray(calibration.get("sample", []), np.float64))
    if sample.size == 0 or not np.isfinite(sample).all():
        raise DataError("calibration has no usable 'sample' of validation scores: retrain the bundle")
    s = np.asarray(scores, np.float64)
    at_least = sample.size - np.searchsorted(sample, np.nan_to_num(s, nan=-np.inf), side="left")
    p = (1.0 + at_least) / (sample.size + 1.0)
    pot = calibration.get("pot", {})
    peaks = np.asarray(pot.get("peaks", []), np.float64)
    n, n_peaks = int(calibration.get("n", sample.size)), int(pot.get("n_peaks", 0))
    if n_peaks > 0 and (peaks > 0).any() and n > 0:  # a tail to extrapolate; else the empirical rank only
        u, fit = float(pot["init_threshold"]), fit_gpd(peaks)
        above = s > u
        tail = n_peaks / n * survival(s[above] - u, fit)
        p[above] = np.minimum(p[above], tail)
    p[np.isnan(s)] = np.nan
    return p


def calibrated_likelihood(scores: np.ndarray, calibration: dict) -> np.ndarray:
    """log(p + 1e-10) / log(1e-10) in [0, 1] of each score's tail probability p; -inf where unscored (never a
    detection in NAB's sweep)."""
    return log_scaled(tail_probability(scores, calibration))


def log_scaled(p: np.ndarray) -> np.ndarray:
    """Tail probabilities on HTM's log scale, log(p + 1e-10) / log(1e-10) clipped to [0, 1]; -inf where p is NaN."""
    out = np.clip(np.log(p + LOG_FLOOR) / math.log(LOG_FLOOR), 0.0, 1.0)
    out[np.isnan(p)] = -np.inf
    return out


def calibrated_by_segment(scores: np.ndarray, calibration: dict, recalibrated=()) -> np.ndarray:
    """calibrated_likelihood with every row under the calibration of the bundle that scored it: scheduled
    retraining (evaluate/refit.py) swaps bundles, each with its own score scale; `recalibrated` lists (first row,
    calibration) of each swap, in order."""
    scores = np.asarray(scores, np.float64)
    starts = [0] + [int(start) for start, _ in recalibrated] + [scores.size]
    calibrations = [calibration] + [c for _, c in recalibrated]
    out = np.empty(scores.size)
    for lo, hi, c in zip(starts, starts[1:], calibrations):
        out[lo:hi] = calibrated_likelihood(scores[lo:hi], c)
    return out


def episode_onsets(values: np.ndarray, window: int) -> np.ndarray:
    """values[i] where it exceeds the maximum of the previous `window` rows (-inf before the first row), else 0;
    -inf rows stay -inf."""
    v = np.asarray(values, np.float64)
    window = max(int(window), 1)
    padded = np.concatenate([np.full(window, -np.inf), v[:-1]]) if v.size else v
    previous = np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1) if v.size else v
    out = np.where(v > previous, v, 0.0)
    out[np.isneginf(v)] = -np.inf
    return out
