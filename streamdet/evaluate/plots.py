"""The plots of `streamdet evaluate --out`: per entity, score and threshold over time; for the run, training and
validation loss per epoch, ROC and PR curves, score distributions of normal and anomalous points, and, per entity, the
input against what the model expected (its reconstruction or forecast) in its highest-scoring window.

Needs matplotlib (the optional extra `streamdet[plots]`); report.py skips plots when it is missing. Each function
writes one PNG and returns its path (None when there is nothing to draw, e.g. a model without a training history).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .vus import segments  # noqa: E402

log = logging.getLogger(__name__)
TOP_CHANNELS = 4  # channels drawn in the expected-vs-input plot (those contributing most to the window's peak)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _shade(ax, mask: np.ndarray, color: str, label: str, alpha: float) -> None:
    for i, (start, end) in enumerate(segments(mask)):
        ax.axvspan(start, end + 1, color=color, alpha=alpha, lw=0, label=label if i == 0 else None)


def plot_entity(run, labels: np.ndarray, path: Path) -> Path:
    """Score and threshold of one backtested entity over its test rows."""
    fig, ax = plt.subplots(figsize=(12, 3.2), dpi=100)
    rows = np.arange(run.scores.size)
    ax.plot(rows, run.scores, lw=0.6, color="tab:blue", label="score")
    ax.plot(rows, run.thresholds, lw=0.8, color="tab:red", label="threshold")
    _shade(ax, np.asarray(labels).astype(np.int8), "tab:orange", "labelled anomaly", 0.25)
    _shade(ax, run.alert_mask(), "tab:purple", "alert open", 0.15)
    finite = run.scores[np.isfinite(run.scores)]
    if finite.size:
        low, high = float(np.min(finite)), float(np.quantile(finite, 0.999))
        if high > low:
            ax.set_ylim(low, low + 1.5 * (high - low))  # a few extreme scores would flatten everything else
    ax.set_xlabel("test row")
    ax.set_ylabel("anomaly score")
    ax.set_title(run.entity)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    return _save(fig, path)


def plot_losses(history: Sequence[dict], path: Path) -> Optional[Path]:
    """Training and validation loss per epoch (the bundle's training history)."""
    if not history:
        return None
    epochs = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="training")
    ax.plot(epochs, [np.nan if h["val_loss"] is None else h["val_loss"] for h in history], marker="o",
            label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss per epoch")
    ax.legend()
    return _save(fig, path)


def curves(labels: np.ndarray, scores: np.ndarray):
    """(false positive rate, true positive rate, precision, recall) over every distinct score threshold."""
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order].astype(np.float64)
    tp, fp = np.cumsum(hits), np.cumsum(1.0 - hits)
    positives, negatives = max(hits.sum(), 1.0), max((1.0 - hits).sum(), 1.0)
    last = np.r_[np.flatnonzero(np.diff(scores[order])), hits.size - 1]  # the last row of each distinct score
    tp, fp = tp[last], fp[last]
    return (np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives], tp / np.maximum(tp + fp, 1.0), tp / positives)


def plot_roc_pr(labels: np.ndarray, scores: np.ndarray, path: Path) -> Optional[Path]:
    """ROC and precision-recall curves of the per-row scores of every entity together."""
    keep = np.isfinite(scores)
    labels, scores = np.asarray(labels)[keep].astype(np.int8), np.asarray(scores)[keep]
    if labels.sum() == 0 or labels.sum() == labels.size:
        return None
    fpr, tpr, precision, recall = curves(labels, scores)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], ls=":", color="grey")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.plot(recall, precision)
    pr.axhline(labels.mean(), ls=":", color="grey")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    return _save(fig, path)


def plot_score_distributions(labels: np.ndarray, scores: np.ndarray, path: Path) -> Optional[Path]:
    """Histograms (log-spaced when the scores span decades) of normal and anomalous rows' scores."""
    keep = np.isfinite(scores)
    labels, scores = np.asarray(labels)[keep].astype(bool), np.asarray(scores)[keep]
    if scores.size == 0:
        return None
    low, high = float(scores.min()), float(scores.max())
    log_bins = low > 0 and high / low > 100
    bins = np.geomspace(low, high, 60) if log_bins else np.linspace(low, high if high > low else low + 1, 60)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.hist(scores[~labels], bins=bins, density=True, alpha=0.6, label=f"normal ({(~labels).sum()} rows)")
    if labels.any():
        ax.hist(scores[labels], bins=bins, density=True, alpha=0.6, label=f"anomalous ({labels.sum()} rows)")
    if log_bins:
        ax.set_xscale("log")
    ax.set(xlabel="anomaly score", ylabel="density", title="score distributions")
    ax.legend()
    return _save(fig, path)


def plot_expected(entity: str, rows: np.ndarray, observed: np.ndarray, expected: Optional[np.ndarray],
                  contributions: np.ndarray, channels: Sequence[str], path: Path) -> Path:
    """Input vs expected (reconstruction or forecast) of the top channels in one window; contributions when the
    model scores without an expectation. rows [L], observed/expected/contributions [L, C] (raw units)."""
    top = np.argsort(-contributions.sum(axis=0))[:TOP_CHANNELS]
    fig, axes = plt.subplots(len(top), 1, figsize=(9, 1.9 * len(top)), dpi=100, sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], top):
        ax.plot(rows, observed[:, c], lw=1.0, label="input")
        if expected is not None:
            ax.plot(rows, expected[:, c], lw=1.0, ls="--", label="expected")
        else:
            ax.twinx().plot(rows, contributions[:, c], lw=0.8, color="tab:red", label="contribution")
        ax.set_ylabel(str(channels[c])[:18], fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
    axes[0, 0].set_title(f"{entity}: highest-scoring window" + ("" if expected is not None else
                                                                 " (model has no reconstruction: contributions)"))
    axes[-1, 0].set_xlabel("test row")
    return _save(fig, path)
