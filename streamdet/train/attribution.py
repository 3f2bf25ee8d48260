"""Fit how alerts rank channels (pipeline/attribution.py), and measure each way on injected validation anomalies.

Methods, each a (center, spread) per channel from the contributions at the rows the daemon scores on the clean
validation tails: `raw` (rank the contributions themselves), `scaled` (divide by the channel's mean contribution),
`robust` ((c - median) / (IQR / 1.349)), `zscore` ((c - mean) / std), `tail` ((c - median) / (q99 - median)),
`ratio` (c / q99: the channel's usual high level as the unit, no centring); and `quantile`, not affine: each
channel's contribution as its tail probability under that channel's own clean distribution, -log10(1 - F(c)), from
quantile knots (pipeline/attribution.surprise); and `response` (`response_quantile`), `tail` (`quantile`) plus the
model's measured response to a shift of each channel, to unmix leaked contributions (train/response.py; it needs
the model: `fit_record`); `input`, each channel's value's distance from its validation median as a tail probability
under the same distances on validation, and `joint`, `quantile`'s and `input`'s tail probabilities added; `local`,
`input` with each value's distance from its channel's median over the window that scored it (the host's own recent
level) in place of the validation median (they read the validation rows themselves: `fit_record`). Spreads are
floored at SPREAD_FLOOR of the median channel's, so a channel that never errs on validation does not name itself in
every later alert.

`injected_interpretation` ranks the methods without test labels: anomalies injected into the validation tails
(train/inject.py) record the channels they touched; each injected segment is "alerted" at its first row whose
score exceeds the init_level quantile of the clean validation scores (the threshold's starting point), and the
channels ranked there by each method are scored with HitRate@P % and NDCG against the touched channels, as
evaluate/metrics.py scores alerts against SMD's and ASD's interpretation labels.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..evaluate import metrics as M
from ..pipeline.alerts import top_channels
from ..pipeline.attribution import INPUT_METHODS, QUANTILE_LEVELS, RESPONSE_METHODS, attributed
from .calibration import daemon_like_outputs, scored_inputs, scored_start, scored_window_medians, scoring_windows
from .inject import KINDS, inject, injection_seed
from .response import fit_response
from .scaling import ROBUST_QUANTILES

METHODS = ("raw", "scaled", "robust", "zscore", "tail", "ratio", "quantile", "response", "response_quantile", "input",
           "joint", "local")
SPREAD_FLOOR = 0.05  # a channel's spread is at least this share of the median channel's
INJECTED_COPIES = 6  # injected versions of each validation tail


def fit_record(method: str, served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
               contrib: np.ndarray) -> dict:
    """The attribution record of `method` for a fitted model, from its clean validation tails and their
    contributions [N, C] at the rows the daemon scores (what a bundle's calibration carries)."""
    if method in RESPONSE_METHODS:
        base = fit_attribution("tail" if method == "response" else "quantile", contrib)
        return fit_response(served, tails, window, stride, context, base, method)
    if method in INPUT_METHODS:
        values = np.concatenate([scored_inputs(np.asarray(t), window, stride, context) for t in tails])
        if method == "local":
            medians = np.concatenate([scored_window_medians(np.asarray(t), window, stride, context) for t in tails])
            return local_record(values, medians)
        record = input_record(values)
        return record if method == "input" else {"method": "joint", "model": _quantile_record(contrib),
                                                  "input": record}
    return fit_attribution(method, contrib)


def input_record(values: np.ndarray) -> dict:
    """The `input` record from the clean validation rows [N, C]: each channel's median, and quantile knots of the
    rows' distances from it (pipeline/attribution.input_surprise). Values come in each channel's own units (bytes
    next to percentages), so a channel's steps are floored by its own range, not by the other channels' as
    contributions are: SPREAD_FLOOR of its q0.1-q99.9 range, else (a channel constant on validation) a millionth of
    its level, so that any later move of a constant channel is a large surprise without being an infinite one."""
    v = np.asarray(values, dtype=np.float64)
    center = np.median(v, axis=0)
    return {**_quantile_record(np.abs(v - center), _own_floor(v)), "method": "input",
            "center": [float(c) for c in center]}


def local_record(values: np.ndarray, medians: np.ndarray) -> dict:
    """The `local` record from the clean validation rows [N, C] and each channel's median over the window that
    scored each row [N, C]: quantile knots of the rows' distances from those medians, floored as `input`'s. A
    fleet's hosts, or one host across a level change, each keep their own centre, so a value is unusual for where
    its host has been in the last window, not for the pooled validation median."""
    v = np.asarray(values, dtype=np.float64)
    return {**_quantile_record(np.abs(v - np.asarray(medians, dtype=np.float64)), _own_floor(v)), "method": "local"}


def _own_floor(v: np.ndarray) -> np.ndarray:
    """Each channel's least knot step: SPREAD_FLOOR of its own q0.1-q99.9 range (the range the robust input scaling
    spans), else a millionth of its level, else 1e-12."""
    low, high = np.quantile(v, ROBUST_QUANTILES, axis=0)
    return np.maximum(SPREAD_FLOOR * (high - low), np.maximum(1e-6 * np.abs(np.median(v, axis=0)), 1e-12))


def fit_attribution(method: str, contrib: np.ndarray) -> dict:
    """The attribution record of `method` from clean validation contributions [N, C]."""
    c = np.asarray(contrib, dtype=np.float64)
    if method == "raw":
        return {"method": "raw"}
    if method == "scaled":
        center, spread = np.zeros(c.shape[1]), np.abs(c.mean(axis=0))
    elif method == "robust":
        q25, center, q75 = np.quantile(c, (0.25, 0.5, 0.75), axis=0)
        spread = (q75 - q25) / 1.349
    elif method == "zscore":
        center, spread = c.mean(axis=0), c.std(axis=0)
    elif method == "tail":
        center, q99 = np.quantile(c, (0.5, 0.99), axis=0)
        spread = q99 - center
    elif method == "ratio":
        center, spread = np.zeros(c.shape[1]), np.quantile(c, 0.99, axis=0)
    elif method == "quantile":
        return _quantile_record(c)
    elif method in RESPONSE_METHODS or method in INPUT_METHODS:
        raise ValueError(f"the {method} attribution reads the model or the validation rows: fit it with fit_record")
    else:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
    return {"method": method, "center": [float(v) for v in center], "spread": [float(v) for v in _floored(spread)]}


def _quantile_record(c: np.ndarray, floor=None) -> dict:
    """Quantile knots [K, C] at the QUANTILE_LEVELS below the rows' maximum's own level (1 - 1/(N+1)) and the
    maximum. Each step between knots is at least what `tail`'s floored spread (SPREAD_FLOOR, or `floor` [C]) gives
    it, so a channel constant on validation is not infinitely surprised by any change."""
    top = 1.0 - 1.0 / (len(c) + 1)
    levels = np.array([lv for lv in QUANTILE_LEVELS if lv < top] + [top])
    knots = np.vstack([np.quantile(c, levels[:-1], axis=0), c.max(axis=0, keepdims=True)])  # [K, C]
    surprise = -np.log10(1.0 - levels)
    ref = list(levels).index(0.99) if 0.99 in levels else len(levels) - 1  # the spread `tail` floors: q99 - median
    least = _floor(knots[ref] - knots[0]) if floor is None else floor  # the least q99 - median step
    unit = least / (surprise[ref] - surprise[0])  # contribution per unit of surprise
    for k in range(1, len(knots)):
        knots[k] = np.maximum(knots[k], knots[k - 1] + unit * (surprise[k] - surprise[k - 1]))
    return {"method": "quantile", "levels": [float(v) for v in levels],
            "knots": [[float(v) for v in row] for row in knots]}


def _floor(spread: np.ndarray) -> float:
    """The least spread a channel gets: SPREAD_FLOOR of the median channel's."""
    positive = spread[spread > 0]
    return max(SPREAD_FLOOR * float(np.median(positive)) if positive.size else 1.0, 1e-12)


def _floored(spread: np.ndarray) -> np.ndarray:
    return np.maximum(spread, _floor(spread))


def clean_contributions(served, tails: Iterable[np.ndarray], window: int, stride: int, context: int) -> np.ndarray:
    """Contributions [N, C] at the rows the daemon scores, over every clean validation tail."""
    parts = [daemon_like_outputs(served, tail, window, stride, context)[1] for tail in tails]
    return np.concatenate([p for p in parts if len(p)])


def ranked(contrib_row: np.ndarray, attribution: dict, values_row: np.ndarray | None = None,
           window_rows: np.ndarray | None = None) -> list[str]:
    """Channel indices (as strings) in the order an alert names them (values_row: the point's inputs; window_rows
    [L, C]: the window that scored it)."""
    names = [str(i) for i in range(contrib_row.shape[-1])]
    return [c["name"] for c in top_channels(attributed(contrib_row, attribution, values_row, window_rows), names,
                                            len(names))]


def injected_interpretation(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                            init_level: float, seed: int, methods: Sequence[str] = METHODS,
                            copies: int = INJECTED_COPIES, consecutive: int = 1, at: str = "onset") -> dict:
    """{method: interpretation scores (evaluate/metrics.py keys)} over the alerted row of each injected segment of
    `copies` injected versions of each clean validation tail (injected_interpretation_at: `at` and `consecutive`)."""
    return injected_interpretation_at(served, tails, window, stride, context, init_level, seed, methods, copies,
                                      consecutive, (at,))[at]


def injected_interpretation_at(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                               init_level: float, seed: int, methods: Sequence[str] = METHODS,
                               copies: int = INJECTED_COPIES, consecutive: int = 1,
                               ats: Sequence[str] = ("onset", "firing")) -> dict:
    """{at: {method: interpretation scores}}: each injected segment is alerted by the first run of `consecutive`
    rows over the threshold that starts inside it (alerting.min_consecutive), and ranked at that run's first row
    ("onset") or at its last, where the alert fires ("firing"); both over the same segments, so paired."""
    clean = [daemon_like_outputs(served, tail, window, stride, context) for tail in tails]
    contrib = np.concatenate([c for _, c in clean if len(c)])
    threshold = float(np.quantile(np.concatenate([s for s, _ in clean]), init_level))
    records = {m: fit_record(m, served, tails, window, stride, context, contrib) for m in methods}
    pairs = {a: {m: [] for m in methods} for a in ats}
    for i, tail in enumerate(tails):
        for copy in range(copies):
            made = inject(tail, seed=injection_seed(seed, i, copy, len(tails)), kinds=KINDS, margin=window,
                          first_kind=i + copy)
            scores, contribs = daemon_like_outputs(served, made.values, window, stride, context)
            values = scored_inputs(made.values, window, stride, context)  # [T', C], row by row with scores
            windows, step = scoring_windows(made.values, window, stride, context)  # row r: windows[r // step]
            start = scored_start(len(made.values), window, stride, context)
            for lo, hi, _, channels in made.segments:
                onset = _first_alerted(scores, lo - start, hi - start, threshold, consecutive)
                if onset is None:
                    continue
                truth = {str(c) for c in channels}
                for a in ats:
                    row = onset if a == "onset" else onset + consecutive - 1
                    for m in methods:
                        pairs[a][m].append((ranked(contribs[row], records[m], values[row], windows[row // step]),
                                            truth))
    return {a: {m: M.interpretation_scores(p) for m, p in by_method.items()} for a, by_method in pairs.items()}


def _first_alerted(scores: np.ndarray, lo: int, hi: int, threshold: float, consecutive: int = 1):
    """First row of [lo, hi) that starts a run of `consecutive` rows over the threshold (the run may go past hi;
    a run already under way at lo starts there), or None."""
    lo, hi = max(lo, 0), min(hi, len(scores))
    over = scores > threshold
    for r in np.flatnonzero(over[lo:hi]) + lo:
        if (r == lo or not over[r - 1]) and r + consecutive <= len(scores) and over[r:r + consecutive].all():
            return int(r)
    return None
