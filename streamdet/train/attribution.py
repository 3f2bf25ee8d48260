"""Fit how alerts rank channels (pipeline/attribution.py), and measure each way on injected validation anomalies.

Methods, each a (center, spread) per channel from the contributions at the rows the daemon scores on the clean
validation tails: `raw` (rank the contributions themselves), `scaled` (divide by the channel's mean contribution),
`robust` ((c - median) / (IQR / 1.349)), `zscore` ((c - mean) / std), `tail` ((c - median) / (q99 - median)),
`ratio` (c / q99: the channel's usual high level as the unit, no centring); and `quantile`, not affine: each
channel's contribution as its tail probability under that channel's own clean distribution, -log10(1 - F(c)), from
quantile knots (pipeline/attribution.surprise); and `response` (`response_quantile`), `tail` (`quantile`) plus the
model's measured response to a shift of each channel, to unmix leaked contributions (train/response.py; it needs
the model: `fit_record`). Spreads are floored at SPREAD_FLOOR of the median channel's, so a
channel that never errs on validation does not name itself in every later alert.

`injected_interpretation` ranks the methods without test labels: anomalies injected into the validation tails
(train/inject.py) record the channels they touched; each injected segment is "alerted" at its first row whose
score exceeds the init_level quantile of the clean validation scores (the threshold's starting point), and the
channels ranked there by each method are scored with HitRate@P % and NDCG against the touched channels, as
evaluate/metrics.py scores alerts against SMD's and ASD's interpretation labels. `choose_rows` uses the same
segments to choose, per bundle, over how many rows of its window an alert averages the standardised contributions
(the record's `rows`; pipeline/attribution.ranking): one row is noisy for some models (pca_window, the autoencoder)
and not for others (knn's sub-window context already spans rows; lstm_ae).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..evaluate import metrics as M
from ..pipeline.alerts import top_channels
from ..pipeline.attribution import MAX_RANKED_ROWS, QUANTILE_LEVELS, RESPONSE_METHODS, ranking
from .calibration import daemon_like_outputs, scored_start
from .inject import KINDS, inject
from .response import fit_response

METHODS = ("raw", "scaled", "robust", "zscore", "tail", "ratio", "quantile", "response", "response_quantile")
SPREAD_FLOOR = 0.05  # a channel's spread is at least this share of the median channel's
INJECTED_COPIES = 6  # injected versions of each validation tail
ROW_CHOICES = (1, 3, MAX_RANKED_ROWS)  # what choose_rows compares
MIN_CHOICE_SEGMENTS = 10  # alerted injected segments below which an alert ranks its firing row alone


def fit_alert_record(method: str, served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                     contrib: np.ndarray, init_level: float, seed: int) -> dict:
    """The record a bundle's calibration carries: fit_record's, plus the rows an alert averages (choose_rows)."""
    record = fit_record(method, served, tails, window, stride, context, contrib)
    record["rows"], record["rows_hitrate150"] = choose_rows(served, tails, window, stride, context, init_level,
                                                            seed, record)
    return record


def fit_record(method: str, served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
               contrib: np.ndarray) -> dict:
    """The attribution record of `method` for a fitted model, from its clean validation tails and their
    contributions [N, C] at the rows the daemon scores (what a bundle's calibration carries)."""
    if method in RESPONSE_METHODS:
        base = fit_attribution("tail" if method == "response" else "quantile", contrib)
        return fit_response(served, tails, window, stride, context, base, method)
    return fit_attribution(method, contrib)


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
    elif method in RESPONSE_METHODS:
        raise ValueError(f"the {method} attribution probes the model: fit it with fit_record")
    else:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
    return {"method": method, "center": [float(v) for v in center], "spread": [float(v) for v in _floored(spread)]}


def _quantile_record(c: np.ndarray) -> dict:
    """Quantile knots [K, C] at the QUANTILE_LEVELS below the rows' maximum's own level (1 - 1/(N+1)) and the
    maximum. Each step between knots is at least what `tail`'s floored spread (SPREAD_FLOOR) gives it, so a channel
    constant on validation is not infinitely surprised by any change."""
    top = 1.0 - 1.0 / (len(c) + 1)
    levels = np.array([lv for lv in QUANTILE_LEVELS if lv < top] + [top])
    knots = np.vstack([np.quantile(c, levels[:-1], axis=0), c.max(axis=0, keepdims=True)])  # [K, C]
    surprise = -np.log10(1.0 - levels)
    ref = list(levels).index(0.99) if 0.99 in levels else len(levels) - 1  # the spread `tail` floors: q99 - median
    unit = _floor(knots[ref] - knots[0]) / (surprise[ref] - surprise[0])  # contribution per unit of surprise
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


def ranked(contrib: np.ndarray, attribution: dict) -> list[str]:
    """Channel indices (as strings) in the order an alert names them: contrib [C] (one row) or [n, C] (the firing
    row last, earlier rows of its window before it)."""
    names = [str(i) for i in range(contrib.shape[-1])]
    return [c["name"] for c in top_channels(ranking(np.atleast_2d(contrib), attribution), names, len(names))]


def injected_interpretation(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                            init_level: float, seed: int, methods: Sequence[str] = METHODS,
                            copies: int = INJECTED_COPIES) -> dict:
    """{method: interpretation scores (evaluate/metrics.py keys)} over the first alerted row of each injected
    segment of `copies` injected versions of each clean validation tail (the firing row alone)."""
    clean = [daemon_like_outputs(served, tail, window, stride, context) for tail in tails]
    contrib = np.concatenate([c for _, c in clean if len(c)])
    threshold = float(np.quantile(np.concatenate([s for s, _ in clean]), init_level))
    records = {m: fit_record(m, served, tails, window, stride, context, contrib) for m in methods}
    pairs = {m: [] for m in methods}
    for rows, truth in alerted_segments(served, tails, window, stride, context, threshold, seed, copies):
        for m in methods:
            pairs[m].append((ranked(rows[-1], records[m]), truth))
    return {m: M.interpretation_scores(p) for m, p in pairs.items()}


def choose_rows(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int, init_level: float,
                seed: int, record: dict, copies: int = INJECTED_COPIES) -> tuple[int, dict]:
    """(rows, {rows: HitRate@150 %}): the ROW_CHOICES value whose averaged ranking names the injected channels best
    (ties: fewer rows); 1 when fewer than MIN_CHOICE_SEGMENTS injected segments alert."""
    clean = [daemon_like_outputs(served, tail, window, stride, context, contributions=False)[0] for tail in tails]
    threshold = float(np.quantile(np.concatenate(clean), init_level))
    pairs = {k: [] for k in ROW_CHOICES}
    for rows, truth in alerted_segments(served, tails, window, stride, context, threshold, seed, copies):
        for k in ROW_CHOICES:
            pairs[k].append((ranked(rows, dict(record, rows=k)), truth))
    hit = {k: M.interpretation_scores(p)["hitrate@150"] for k, p in pairs.items()}
    if len(pairs[1]) < MIN_CHOICE_SEGMENTS:
        return 1, {str(k): v for k, v in hit.items()}
    best = max(ROW_CHOICES, key=lambda k: (hit[k], -k))
    return best, {str(k): float(v) for k, v in hit.items()}


def alerted_segments(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                     threshold: float, seed: int, copies: int):
    """(contributions [1 + lookback, C] of the first row over `threshold` in each injected segment and the rows
    before it in its window, the segment's touched channels as strings) over `copies` injected versions of each
    clean validation tail."""
    for i, tail in enumerate(tails):
        for copy in range(copies):
            made = inject(tail, seed=seed * 1000 + i * 10 + copy, kinds=KINDS, margin=window,
                          first_kind=i + copy)
            scores, contribs = daemon_like_outputs(served, made.values, window, stride, context,
                                                   lookback=MAX_RANKED_ROWS - 1)
            start = scored_start(len(made.values), window, stride, context)
            for lo, hi, _, channels in made.segments:
                row = _first_alerted(scores, lo - start, hi - start, threshold)
                if row is not None:
                    yield contribs[row], {str(c) for c in channels}


def _first_alerted(scores: np.ndarray, lo: int, hi: int, threshold: float):
    lo, hi = max(lo, 0), min(hi, len(scores))
    over = np.flatnonzero(scores[lo:hi] > threshold)
    return lo + int(over[0]) if over.size else None
