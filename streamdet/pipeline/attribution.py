"""Which channels an alert names: each channel's contribution measured against its own validation distribution.

A model's raw per-channel contributions (reconstruction or forecast error, a memory-attention shift, ...) are not
comparable across channels: a channel that the model never reconstructs well (a noisy counter) has a large error at
every row, so ranking raw contributions names it first in nearly every alert, whatever went wrong. The bundle's
calibration can carry `attribution` = {"method", "center" [C], "spread" [C]}, fitted on the clean validation tails
(train/attribution.py); an alert then ranks channels by (contribution - center) / spread, i.e. by how unusual each
channel's contribution is for that channel. A bundle without it ranks the raw contributions (as before). The
`quantile` record carries quantile knots [K, C] instead: an alert ranks each channel's tail probability under its own
validation distribution (`surprise`); the `response` record adds how a shift of each channel raises every channel's
standardised contribution, and an alert ranks the channels whose shifts best explain what it sees (`unmixed`).
The `input` record ranks the channels' values instead of the model's contributions: each value's distance from the
channel's validation median, as a tail probability under the same distance on validation (`input_surprise`: what
an operator sees on the channel's graph); `joint` adds the two tail probabilities, so a channel ranks first when both
the model's contribution and the value itself are unusual for it. The `local` record measures each value from its
channel's median over the window that scored it (`local_surprise`), so each host is judged against its own recent
level rather than the validation median (which a fleet bundle pools over unlike hosts).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)
RESPONSE_METHODS = ("response", "response_quantile")  # records holding a base record and a response matrix
UNMIX_SWEEPS = 50  # coordinate-descent sweeps of `unmixed` (C <= a few hundred: milliseconds per alert)
QUANTILE_LEVELS = (0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999)  # knots of `quantile` records (and the maximum)
INPUT_METHODS = ("input", "joint", "local")  # records that read the points' values (joint: and the contributions)


def attributed(contrib: np.ndarray, attribution: Optional[dict], values: Optional[np.ndarray] = None,
               window: Optional[np.ndarray] = None) -> np.ndarray:
    """contrib [..., C] standardised by the bundle's attribution record (unchanged when there is none); `values`
    [..., C], the same points' inputs, and `window` [..., L, C], the window that scored them, for the records that
    read them (INPUT_METHODS)."""
    if not attribution or attribution.get("method", "raw") == "raw":
        return contrib
    if attribution["method"] in INPUT_METHODS:
        return _with_inputs(contrib, attribution, values, window)
    if attribution["method"] == "quantile":
        return surprise(contrib, attribution)
    if attribution["method"] in RESPONSE_METHODS:
        return unmixed(attributed(contrib, attribution["base"]), attribution)
    return _standardised(contrib, attribution)


def _with_inputs(contrib: np.ndarray, attribution: dict, values: Optional[np.ndarray],
                 window: Optional[np.ndarray]) -> np.ndarray:
    """`input`, `joint` or `local`; a caller without the values (or, for `local`, the window) gets the
    contributions' ranking (logged), never an error."""
    model = attribution.get("model")  # joint: the contributions' own quantile record
    local = attribution["method"] == "local"
    if values is None or (local and window is None):
        log.warning("the bundle's %s attribution needs the points' values%s and got none: alert ranks the %s",
                    attribution["method"], " and window" if local else "",
                    "contributions' tail probabilities" if model else "raw contributions")
        return surprise(contrib, model) if model else contrib
    if local:
        return local_surprise(values, window, attribution)
    rank = input_surprise(values, attribution["input"] if model else attribution)
    return rank + surprise(contrib, model) if model else rank


def input_surprise(values: np.ndarray, record: dict) -> np.ndarray:
    """-log10 tail probability of each value's distance from its channel's validation median (`record["center"]`),
    under that channel's distances on validation (the record's quantile knots, as `surprise`)."""
    center = np.asarray(record["center"], dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if center.shape != v.shape[-1:]:
        log.warning("bundle input attribution record does not fit the values (center %s, values %s): alert ranks "
                    "the distances from it unscaled", center.shape, v.shape)
        return np.abs(v)
    return surprise(np.abs(v - center), record)


def local_surprise(values: np.ndarray, window: np.ndarray, record: dict) -> np.ndarray:
    """-log10 tail probability of each value's distance from its channel's median over `window` [..., L, C] (the
    window that scored it), under that channel's same distances on validation (the record's knots, as `surprise`)."""
    v = np.asarray(values, dtype=np.float64)
    center = np.median(np.asarray(window, dtype=np.float64), axis=-2)
    if center.shape[-1:] != v.shape[-1:]:
        log.warning("bundle local attribution window does not fit the values (window %s, values %s): alert ranks "
                    "the values unscaled", np.shape(window), v.shape)
        return np.abs(v)
    return surprise(np.abs(v - center), record)


def _standardised(contrib: np.ndarray, attribution: dict) -> np.ndarray:
    center = np.asarray(attribution["center"], dtype=np.float64)
    spread = np.asarray(attribution["spread"], dtype=np.float64)
    if center.shape != spread.shape or center.shape[-1:] != contrib.shape[-1:] or not (spread > 0).all():
        log.warning("bundle attribution record does not fit the contributions (center %s, spread %s, "
                    "contributions %s, spreads must be > 0): alert ranks the raw contributions",
                    center.shape, spread.shape, contrib.shape)
        return contrib
    return (np.asarray(contrib, dtype=np.float64) - center) / spread


def surprise(contrib: np.ndarray, record: dict) -> np.ndarray:
    """-log10 of each channel's tail probability, piecewise linear between the record's quantile knots [K, C] (strictly
    increasing per channel), continued linearly below the median and past the maximum with the slope of the last
    knot step, so values beyond anything seen on validation still rank by how far beyond they are."""
    knots = np.asarray(record["knots"], dtype=np.float64)  # [K, C]
    levels = -np.log10(1.0 - np.asarray(record["levels"], dtype=np.float64))  # [K]
    c = np.asarray(contrib, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[0] != levels.size or knots.shape[1:] != c.shape[-1:]:
        log.warning("bundle quantile attribution record does not fit the contributions (knots %s, levels %d, "
                    "contributions %s): alert ranks the raw contributions", knots.shape, levels.size, c.shape)
        return contrib
    # every channel at once (a loop over the channels cost ~0.3 ms per firing alert at 38 channels): the knot step
    # each value falls in, the first below the lowest knot and the last past the highest (the same lines continued)
    flat = c.reshape(-1, c.shape[-1])  # [N, C]
    step = np.clip((flat[:, None, :] > knots[None, :, :]).sum(axis=1), 1, knots.shape[0] - 1)  # [N, C]
    column = np.arange(knots.shape[1])
    lo, hi = knots[step - 1, column], knots[step, column]  # [N, C]
    slope = (levels[step] - levels[step - 1]) / (hi - lo)
    return (levels[step - 1] + (flat - lo) * slope).reshape(c.shape)


def unmixed(z: np.ndarray, record: dict, sweeps: int = UNMIX_SWEEPS) -> np.ndarray:
    """Weights of the non-negative mix of the record's response columns [C, C] that best fits the positive part of
    the standardised contributions z [..., C] (least squares, coordinate descent); a channel whose shift leaked into
    others gets their rise too. Channels with no weight follow, ordered by z (negative values, share 0)."""
    response = np.asarray(record.get("response", ()), dtype=np.float64)
    if response.shape != (z.shape[-1], z.shape[-1]):
        log.warning("bundle response attribution record does not fit the contributions (response %s, "
                    "contributions %s): alert ranks the standardised contributions", response.shape, z.shape)
        return z
    norms = np.linalg.norm(response, axis=0)
    columns = response / np.where(norms > 0, norms, 1.0)
    out = np.empty_like(z, dtype=np.float64)
    flat, result = z.reshape(-1, z.shape[-1]), out.reshape(-1, z.shape[-1])
    for r, row in enumerate(flat):
        target, weight = np.maximum(row, 0.0), np.zeros(row.shape[-1])
        residual = target.copy()
        for _ in range(sweeps):
            for j in np.flatnonzero(norms > 0):
                step = max(-weight[j], columns[:, j] @ residual)
                weight[j] += step
                residual -= step * columns[:, j]
        below = row - (np.abs(row).max() + 1.0)  # every unweighted channel under every weighted one
        result[r] = np.where(weight > 0, weight, below)
    return out
