"""Per-channel input scaling fitted on training rows: x' = (x - offset) / scale, stored in the bundle.

Real metric rows mix units (bytes, percentages, counts), so some scaling is needed; benchmark data (SMD, ASD) is
already min-max scaled by its publishers, where a z-score hurts: a channel that barely moves in training gets a tiny
std, and its ordinary test noise then dominates every distance (docs/evaluation.md measures this: ASD window-kNN
VUS-PR 0.61 unscaled vs 0.46 with the z-score). Methods:

- `robust` (default): offset = median; scale = the central 99.8 % range (q99.9 - q0.1) of the channel, floored at
  ROBUST_MAGNITUDE_FLOOR x the channel's largest |value| (1.0 for an all-zero channel). A range, not a standard
  deviation: a channel that rests at one value and makes rare excursions in training (common in SMD and ASD) keeps
  those excursions at about one unit, as min-max scaling would, instead of having its quiet noise inflated; the
  quantiles keep one wild training value (a counter reset) from setting the scale; the magnitude floor keeps a
  channel that is constant in training (0.0 or 10^9 bytes alike) from turning a tiny change into a huge one.
- `global`: the former z-score, std floored at STD_FLOOR_FRACTION x the median std of the varying channels.
- `none`: identity, for data that is already on one scale.

Statistics are pooled over all training entities (one set per channel), so the daemon can score an entity it never
saw with no per-entity state.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

METHODS = ("robust", "global", "none")
STD_FLOOR_FRACTION = 0.05  # global: floor = this x the median std of the non-constant channels
ROBUST_QUANTILES = (0.001, 0.999)  # robust: the central 99.8 % of training values spans one unit (chosen over
# (0.005, 0.995) on injected validation tails: docs/evaluation.md, "The scoring gap")
ROBUST_MAGNITUDE_FLOOR = 0.01  # robust: scale >= 1 % of the channel's largest |value|


def fit_scaling(parts: list[np.ndarray], method: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset [C], scale [C]) float32 from training rows (a list of [T, C] arrays, one per entity)."""
    n_channels = parts[0].shape[1]
    if method == "none":
        return np.zeros(n_channels, np.float32), np.ones(n_channels, np.float32)
    rows = np.concatenate(parts).astype(np.float64)
    if method == "global":
        return _zscore(rows)
    if method == "robust":
        return _robust(rows)
    raise ConfigError(f"train.normalisation: unknown method {method!r} (known: {', '.join(METHODS)})")


def _zscore(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    varying = std[std > 1e-12]
    floor = STD_FLOOR_FRACTION * (float(np.median(varying)) if varying.size else 1.0)
    return mean.astype(np.float32), np.maximum(std, max(floor, 1e-6)).astype(np.float32)


def _robust(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, median, high = np.quantile(rows, (ROBUST_QUANTILES[0], 0.5, ROBUST_QUANTILES[1]), axis=0)
    magnitude = np.abs(rows).max(axis=0)
    floor = np.where(magnitude > 0, ROBUST_MAGNITUDE_FLOOR * magnitude, 1.0)
    scale = np.maximum(high - low, np.maximum(floor, 1e-12))
    return median.astype(np.float32), scale.astype(np.float32)
