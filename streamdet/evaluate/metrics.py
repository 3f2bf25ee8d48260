"""Threshold-dependent detection metrics on one series: labels [N] (0/1) against predictions [N] (0/1).

What a prediction is comes from the backtest (docs/evaluation.md): either the points covered by a firing alert (what
on-call sees) or the raw over-threshold points (what the threshold alone says). The metrics here do not care which.

- point P/R/F1: every time step counts once.
- event P/R/F1: a labelled segment counts once, detected if any of its points is predicted; a predicted run
  (contiguous predicted points, i.e. one alert) is a true event if it overlaps any labelled segment.
- composite F1 (Garg et al., 2021): point precision with event recall, so long segments cannot dominate recall.
- detection delay: steps from a segment's start to its first predicted point, over detected segments.
- false alerts per 1,000 steps: predicted runs that overlap no labelled segment.
- point-adjusted F1 (Xu et al., 2018) marks a whole segment as found when one point is: it inflates results and is
  reported only for comparison with papers, never as our headline number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import StreamdetError
from .vus import segments


@dataclass
class Counts:
    """Raw counts for one series; summing Counts of several series gives micro-averaged metrics."""

    n: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    events: int = 0  # labelled segments
    events_found: int = 0
    runs: int = 0  # predicted runs (alerts)
    runs_true: int = 0  # predicted runs overlapping a labelled segment
    delay_sum: int = 0
    pa_tp: int = 0
    pa_fn: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _f1(p: float, r: float) -> float:
    """F1 of precision p and recall r. With anomalies labelled and nothing predicted (p undefined, r = 0) it is 0,
    as 2tp / (2tp + fp + fn) says: NaN there let a macro mean skip, and so reward, a silent detector."""
    if r == 0:
        return 0.0
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _as_binary(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x).ravel()
    if x.size and not np.isin(x, (0, 1)).all():
        raise StreamdetError(f"metrics: {what} must hold only 0/1 values")
    return x.astype(bool)


def count(labels: np.ndarray, predicted: np.ndarray) -> Counts:
    """Count everything the threshold-dependent metrics need for one series."""
    y, p = _as_binary(labels, "labels"), _as_binary(predicted, "predictions")
    if y.shape != p.shape:
        raise StreamdetError(f"metrics: labels ({y.size}) and predictions ({p.size}) differ in length")
    truth, runs = segments(y), segments(p)
    c = Counts(n=int(y.size), tp=int(np.sum(y & p)), fp=int(np.sum(~y & p)), fn=int(np.sum(y & ~p)))
    c.events, c.runs = len(truth), len(runs)
    for start, end in truth:
        hits = np.flatnonzero(p[start:end + 1])
        if hits.size:
            c.events_found += 1
            c.delay_sum += int(hits[0])
            c.pa_tp += int(end - start + 1)
        else:
            c.pa_fn += int(end - start + 1)
    c.runs_true = sum(bool(y[a:b + 1].any()) for a, b in runs)
    return c


def summarise(c: Counts) -> dict:
    """Metrics from counts (one series, or the sum over series for micro averages)."""
    precision, recall = _ratio(c.tp, c.tp + c.fp), _ratio(c.tp, c.tp + c.fn)
    ev_precision, ev_recall = _ratio(c.runs_true, c.runs), _ratio(c.events_found, c.events)
    pa_precision, pa_recall = _ratio(c.pa_tp, c.pa_tp + c.fp), _ratio(c.pa_tp, c.pa_tp + c.pa_fn)
    return {
        "point_precision": precision, "point_recall": recall, "point_f1": _f1(precision, recall),
        "event_precision": ev_precision, "event_recall": ev_recall, "event_f1": _f1(ev_precision, ev_recall),
        "composite_f1": _f1(precision, ev_recall),
        "detection_delay": _ratio(c.delay_sum, c.events_found),
        "false_alerts_per_1k": _ratio(1000.0 * (c.runs - c.runs_true), c.n),
        "pa_f1_paper_only": _f1(pa_precision, pa_recall),
    }


def threshold_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """All threshold-dependent metrics of one series."""
    return summarise(count(labels, predicted))


def _candidate_thresholds(scores: np.ndarray, n: int) -> np.ndarray:
    return np.unique(np.quantile(scores, np.linspace(0.0, 1.0, n)))


def best_f1(labels: np.ndarray, scores: np.ndarray, n_thresholds: int = 500) -> dict:
    """Best point-F1 and best point-adjusted F1 over score thresholds. Uses test labels: for papers only."""
    y = _as_binary(labels, "labels")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not y.any():
        return {"best_f1_paper_only": float("nan"), "best_pa_f1_paper_only": float("nan")}
    t = _candidate_thresholds(scores, n_thresholds)  # [T]
    over = scores[None, :] >= t[:, None]  # [T, N]
    tp, fp = (over & y).sum(axis=1), (over & ~y).sum(axis=1)
    fn = y.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    segs = segments(y)
    seg_max = np.array([scores[a:b + 1].max() for a, b in segs])
    seg_len = segs[:, 1] - segs[:, 0] + 1
    pa_tp = ((seg_max[None, :] >= t[:, None]) * seg_len[None, :]).sum(axis=1)  # [T, S] -> [T]
    pa_f1 = 2 * pa_tp / np.maximum(2 * pa_tp + fp + (y.sum() - pa_tp), 1)
    return {"best_f1_paper_only": float(f1.max()), "best_pa_f1_paper_only": float(pa_f1.max())}


def hit_rate(ranked: list[str], truth: set[str], percent: float) -> float:
    """Share of the true channels found among the top floor(percent x |truth|) ranked channels (OmniAnomaly)."""
    k = max(int(np.floor(len(truth) * percent / 100.0)), 1)
    return len(set(ranked[:k]) & truth) / len(truth)


def ndcg(ranked: list[str], truth: set[str], percent: float) -> float:
    """Normalised discounted cumulative gain of the top floor(percent x |truth|) channels, binary relevance."""
    k = max(int(np.floor(len(truth) * percent / 100.0)), 1)
    dcg = sum(1.0 / np.log2(i + 2) for i, name in enumerate(ranked[:k]) if name in truth)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(truth))))
    return dcg / ideal


def interpretation_scores(pairs: list[tuple[list[str], set[str]]]) -> dict:
    """Mean HitRate@100/150% and NDCG@100/150% over (ranked channels of an alert, true channels) pairs."""
    out = {}
    for p in (100, 150):
        out[f"hitrate@{p}"] = float(np.mean([hit_rate(r, t, p) for r, t in pairs])) if pairs else float("nan")
        out[f"ndcg@{p}"] = float(np.mean([ndcg(r, t, p) for r, t in pairs])) if pairs else float("nan")
    out["interpreted_alerts"] = len(pairs)
    return out


def macro(per_entity: list[dict]) -> dict:
    """Mean of every numeric metric over entities, ignoring NaN (an entity without anomalies has no recall)."""
    keys = [k for k, v in per_entity[0].items() if isinstance(v, (int, float))] if per_entity else []
    out = {}
    for k in keys:
        values = np.array([e[k] for e in per_entity if isinstance(e.get(k), (int, float))], dtype=np.float64)
        out[k] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


@dataclass
class PairedDifference:
    """Mean of per-entity differences (a - b) and its bootstrap interval: is a model really ahead of another?"""

    mean: float
    low: float
    high: float
    entities: int

    @property
    def verdict(self) -> str:
        """"ahead" / "behind" only when the whole interval is on one side of zero, else "tie"."""
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "tie"


def paired_difference(a: dict[str, float], b: dict[str, float], level: float = 0.95, rounds: int = 10_000,
                      seed: int = 0) -> PairedDifference | None:
    """Percentile bootstrap over entities of the mean difference a[e] - b[e], paired on the entities both scored.

    A macro metric is a mean over entities, so resampling entities is what says how much a difference in the table
    would move on another draw of machines. None when fewer than 3 entities have finite values in both."""
    common = [e for e in a if e in b and np.isfinite(a[e]) and np.isfinite(b[e])]
    if len(common) < 3:
        return None
    diffs = np.array([a[e] - b[e] for e in common], dtype=np.float64)  # [E]
    picks = np.random.default_rng(seed).integers(0, len(diffs), (rounds, len(diffs)))  # [R, E]
    means = diffs[picks].mean(axis=1)  # [R]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(float(diffs.mean()), float(low), float(high), len(common))


def _pooled_f1(counts: np.ndarray) -> np.ndarray:
    """Point-F1 from summed (tp, fp, fn) counts [..., 3]."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def paired_pooled_f1(a: dict[str, tuple], b: dict[str, tuple], level: float = 0.95, rounds: int = 10_000,
                     seed: int = 0) -> PairedDifference | None:
    """Bootstrap over entities of the difference of POOLED point-F1 (a micro metric): each round draws entities with
    replacement, sums both models' (tp, fp, fn) over the same draw and differences the two F1s. The pooled F1 of a
    few long anomalous entities can swing with the draw of machines as much as a mean does; None below 3 entities."""
    common = [e for e in a if e in b]
    if len(common) < 3:
        return None
    ca = np.array([a[e] for e in common], dtype=np.float64)  # [E, 3]
    cb = np.array([b[e] for e in common], dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(common), (rounds, len(common)))  # [R, E]
    diffs = _pooled_f1(ca[picks].sum(axis=1)) - _pooled_f1(cb[picks].sum(axis=1))  # [R, E, 3] -> [R]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    mean = float(_pooled_f1(ca.sum(axis=0)) - _pooled_f1(cb.sum(axis=0)))
    return PairedDifference(mean, float(low), float(high), len(common))
