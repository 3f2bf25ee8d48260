"""Fit how alerts rank channels (pipeline/attribution.py), and measure each way on injected validation anomalies.

Methods, each a (center, spread) per channel from the contributions at the rows the daemon scores on the clean
validation tails: `raw` (rank the contributions themselves), `scaled` (divide by the channel's mean contribution),
`robust` ((c - median) / (IQR / 1.349)), `zscore` ((c - mean) / std), `tail` ((c - median) / (q99 - median)).
Spreads are floored at SPREAD_FLOOR of the median channel's, so a channel that never errs on validation does not
name itself in every later alert.

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
from ..pipeline.attribution import attributed
from .calibration import daemon_like_outputs, scored_start
from .inject import KINDS, inject

METHODS = ("raw", "scaled", "robust", "zscore", "tail")
SPREAD_FLOOR = 0.05  # a channel's spread is at least this share of the median channel's
INJECTED_COPIES = 6  # injected versions of each validation tail


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
    else:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
    return {"method": method, "center": [float(v) for v in center], "spread": [float(v) for v in _floored(spread)]}


def _floored(spread: np.ndarray) -> np.ndarray:
    positive = spread[spread > 0]
    floor = SPREAD_FLOOR * float(np.median(positive)) if positive.size else 1.0
    return np.maximum(spread, max(floor, 1e-12))


def clean_contributions(served, tails: Iterable[np.ndarray], window: int, stride: int, context: int) -> np.ndarray:
    """Contributions [N, C] at the rows the daemon scores, over every clean validation tail."""
    parts = [daemon_like_outputs(served, tail, window, stride, context)[1] for tail in tails]
    return np.concatenate([p for p in parts if len(p)])


def ranked(contrib_row: np.ndarray, attribution: dict) -> list[str]:
    """Channel indices (as strings) in the order an alert names them."""
    names = [str(i) for i in range(contrib_row.shape[-1])]
    return [c["name"] for c in top_channels(attributed(contrib_row, attribution), names, len(names))]


def injected_interpretation(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int,
                            init_level: float, seed: int, methods: Sequence[str] = METHODS,
                            copies: int = INJECTED_COPIES) -> dict:
    """{method: interpretation scores (evaluate/metrics.py keys)} over the first alerted row of each injected
    segment of `copies` injected versions of each clean validation tail."""
    clean = [daemon_like_outputs(served, tail, window, stride, context) for tail in tails]
    contrib = np.concatenate([c for _, c in clean if len(c)])
    threshold = float(np.quantile(np.concatenate([s for s, _ in clean]), init_level))
    records = {m: fit_attribution(m, contrib) for m in methods}
    pairs = {m: [] for m in methods}
    for i, tail in enumerate(tails):
        for copy in range(copies):
            made = inject(tail, seed=seed * 1000 + i * 10 + copy, kinds=KINDS, margin=window,
                          first_kind=i + copy)
            scores, contribs = daemon_like_outputs(served, made.values, window, stride, context)
            start = scored_start(len(made.values), window, stride, context)
            for lo, hi, _, channels in made.segments:
                row = _first_alerted(scores, lo - start, hi - start, threshold)
                if row is None:
                    continue
                truth = {str(c) for c in channels}
                for m in methods:
                    pairs[m].append((ranked(contribs[row], records[m]), truth))
    return {m: M.interpretation_scores(p) for m, p in pairs.items()}


def _first_alerted(scores: np.ndarray, lo: int, hi: int, threshold: float):
    lo, hi = max(lo, 0), min(hi, len(scores))
    over = np.flatnonzero(scores[lo:hi] > threshold)
    return lo + int(over[0]) if over.size else None
