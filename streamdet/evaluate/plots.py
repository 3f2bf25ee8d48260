"""One PNG per entity: score and threshold over time, labelled anomalies shaded, alert spans marked.

Needs matplotlib (the optional extra `streamdet[plots]`); report.py skips plots when it is missing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .vus import segments  # noqa: E402


def _shade(ax, mask: np.ndarray, color: str, label: str, alpha: float) -> None:
    for i, (start, end) in enumerate(segments(mask)):
        ax.axvspan(start, end + 1, color=color, alpha=alpha, lw=0, label=label if i == 0 else None)


def plot_entity(run, labels: np.ndarray, path: Path) -> None:
    """Write the plot of one backtested entity to `path`."""
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
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
