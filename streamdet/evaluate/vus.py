"""Threshold-free ranking metrics: AUC-ROC, AUC-PR (average precision) and VUS-ROC / VUS-PR.

VUS (Paparrizos et al., "Volume Under the Surface", VLDB 2022) averages a range-aware ROC / PR area over buffer
lengths w = 0..W. For one w, every labelled segment gets a soft border of w//2 points on each side whose label decays
as sqrt(1 - d/w); a border point counts as a hit only if it is predicted, so detecting just before or after a segment
earns partial credit instead of a false positive. Recall is additionally scaled by the share of (border-merged)
segments touched by any prediction. Thresholds are `n_thresholds` evenly spaced ranks of the sorted scores, exactly
as TSB-AD's reference implementation (NeurIPS 2024) does, so our numbers agree with theirs to float precision
(tests/evaluate/test_vus_reference.py checks it). This module computes all thresholds at once from sorted cumulative
sums instead of re-labelling the series per threshold.
"""

from __future__ import annotations

import numpy as np

from ..errors import StreamdetError


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise StreamdetError(f"metrics: labels ({labels.size}) and scores ({scores.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise StreamdetError(f"metrics: scores hold {int(np.sum(~np.isfinite(scores)))} NaN/inf values")
    return labels, scores


def segments(labels: np.ndarray) -> np.ndarray:
    """Labelled segments as an [S, 2] array of inclusive (start, end) row indices."""
    y = np.concatenate([[0], np.asarray(labels).astype(np.int8).ravel(), [0]])
    edges = np.diff(y)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return np.stack([starts, ends], axis=1) if starts.size else np.zeros((0, 2), dtype=np.int64)


def _ranked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct score threshold, highest threshold first."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64)


def auc_roc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the point-wise ROC curve (ties form one step, as in scikit-learn); NaN without both classes."""
    labels, scores = _check(labels, scores)
    tps, fps = _ranked(labels, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        return float("nan")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


def auc_pr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall step) x precision; NaN without labelled anomalies."""
    labels, scores = _check(labels, scores)
    tps, fps = _ranked(labels, scores)
    if tps[-1] == 0:
        return float("nan")
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _merge(segs: np.ndarray, half: int, n: int) -> np.ndarray:
    """Segments widened by `half` on each side, merged where the widened spans overlap, clipped to [0, n-1]."""
    merged: list[list[int]] = []
    for start, end in segs:
        lo, hi = max(int(start) - half, 0), int(end) + half
        if merged and merged[-1][1] >= lo:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if merged:
        merged[-1][1] = min(merged[-1][1], n - 1)
    return np.asarray(merged, dtype=np.int64).reshape(-1, 2)


def soft_labels(labels: np.ndarray, segs: np.ndarray, w: int) -> np.ndarray:
    """Labels with sqrt-decaying borders of w//2 points around each segment (values in [0, 1])."""
    soft = labels.astype(np.float64)
    n = soft.size
    for start, end in segs:
        after = np.arange(end + 1, min(end + w // 2 + 1, n))
        soft[after] += np.sqrt(1 - (after - end) / w)
        before = np.arange(max(start - w // 2, 0), start)
        soft[before] += np.sqrt(1 - (start - before) / w)
    return np.minimum(soft, 1.0)


def _threshold_values(scores: np.ndarray, n_thresholds: int) -> np.ndarray:
    ranks = np.linspace(0, scores.size - 1, n_thresholds).astype(int)
    return np.sort(scores)[::-1][ranks]


def _hits_at(scores: np.ndarray, weights: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold t: (number of points with score >= t, sum of `weights` over those points)."""
    order = np.argsort(-scores, kind="mergesort")
    cum = np.r_[0.0, np.cumsum(weights[order])]
    ascending = scores[order][::-1]
    count = scores.size - np.searchsorted(ascending, thresholds, side="left")
    return count.astype(np.float64), cum[count]


def _range_curve(labels, scores, segs, w, thresholds):
    """(TPR, FPR, precision) per threshold for buffer length w, following TSB-AD's RangeAUC_volume_opt."""
    soft = soft_labels(labels, segs, w)
    border = np.where(labels == 1, 0.0, soft)
    n_pred, tp = _hits_at(scores, soft, thresholds)
    _, border_hits = _hits_at(scores, border, thresholds)
    spans = _merge(segs, w // 2, labels.size)
    span_max = np.array([scores[a:b + 1].max() for a, b in spans])
    existence = (span_max[None, :] >= thresholds[:, None]).sum(axis=1) / len(spans)  # [T, S] -> [T]
    positives = labels.sum() + border_hits / 2
    tpr = np.minimum(tp / positives, 1.0) * existence
    fpr = (n_pred - tp) / (labels.size - positives)
    return tpr, fpr, tp / n_pred


def vus(labels: np.ndarray, scores: np.ndarray, max_window: int = 100, n_thresholds: int = 250) -> dict:
    """VUS-ROC and VUS-PR averaged over buffer lengths 0..max_window; NaN when nothing is labelled."""
    labels, scores = _check(labels, scores)
    segs = segments(labels)
    if segs.size == 0:
        return {"vus_roc": float("nan"), "vus_pr": float("nan")}
    thresholds = _threshold_values(scores, n_thresholds)
    rocs, prs = [], []
    for w in range(max_window + 1):
        tpr, fpr, precision = _range_curve(labels, scores, segs, w, thresholds)
        tpr_c, fpr_c = np.r_[0.0, tpr, 1.0], np.r_[0.0, fpr, 1.0]
        rocs.append(np.sum(np.diff(fpr_c) * (tpr_c[1:] + tpr_c[:-1]) / 2))
        prs.append(np.sum(np.diff(np.r_[0.0, tpr]) * precision))
    return {"vus_roc": float(np.mean(rocs)), "vus_pr": float(np.mean(prs))}
