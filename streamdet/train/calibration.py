"""Threshold priors from validation scores only (docs/internals.md, "calibration"); never from test data.

Validation scores are computed the way the daemon scores: one window every `stride` points, keeping the scores of
the last `stride` steps of each window, so the priors describe exactly the numbers the thresholds will see live.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import sliding_windows
from ..errors import DataError
from ..pipeline.gpd import fit_gpd, fit_record
from ..pipeline.stride import effective_stride

QUANTILES = (0.5, 0.9, 0.99, 0.995, 0.999)
MAX_PEAKS = 2000
MAX_SAMPLE = 2000
BATCH = 256


def first_scored_row(window: int, stride: int, context: int = 0) -> int:
    """Row of the first full-window score of a fresh stream: the daemon emits windows ending at rows m*stride - 1."""
    stride = effective_stride(stride, window, context)
    return -(-window // stride) * stride - stride


def scored_start(n_rows: int, window: int, stride: int, context: int = 0) -> int:
    """Row of `raw` where daemon_like_scores' result starts (first_scored_row, or for a tail too short to keep the
    daemon's alignment, the last `stride` rows of its first window)."""
    stride = effective_stride(stride, window, context)
    offset = first_scored_row(window, stride) + stride - window
    return (offset if n_rows - offset >= window else 0) + window - stride


def _aligned(n_rows: int, window: int, stride: int, context: int) -> tuple[int, int]:
    """(the stride the daemon uses, the row of a series of n_rows where its first full window starts; a tail too
    short to keep the daemon's alignment gives it up)."""
    stride = effective_stride(stride, window, context)
    return stride, scored_start(n_rows, window, stride) + stride - window


def daemon_like_scores(served: torch.nn.Module, raw: np.ndarray, window: int, stride: int,
                       context: int = 0) -> np.ndarray:
    """Scores of one raw series [T, C] replayed as a fresh stream, the rows the daemon scores with a full window.

    The daemon scores a window every `stride` points, counted from the stream's first point, and keeps its last
    `stride` steps (the stride capped as the pipeline caps it); the result starts at row
    `scored_start(len(raw), window, stride, context)` of `raw` (first_scored_row unless the tail is short).
    """
    return daemon_like_outputs(served, raw, window, stride, context, contributions=False)[0]


def daemon_like_outputs(served: torch.nn.Module, raw: np.ndarray, window: int, stride: int, context: int = 0,
                        contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """daemon_like_scores' scores [T'] and, when asked, the per-channel contributions [T', C] of the same rows
    (what an alert raised at that row ranks its channels by)."""
    stride, offset = _aligned(len(raw), window, stride, context)
    n_channels = raw.shape[1] if raw.ndim == 2 else 0
    if len(raw) < window:
        return np.zeros(0, np.float32), (np.zeros((0, n_channels), np.float32) if contributions else None)
    windows = sliding_windows(raw[offset:].astype(np.float32), window, stride)  # [N, L, C], ends at m*stride - 1
    scores, contribs = [], []
    with torch.inference_mode():
        for i in range(0, len(windows), BATCH):
            batch = torch.from_numpy(np.array(windows[i:i + BATCH], dtype=np.float32))  # a writable copy
            s, c = served(batch)  # [B, L], [B, L, C]
            scores.append(s[:, -stride:].reshape(-1).numpy())
            if contributions:
                contribs.append(c[:, -stride:].reshape(-1, c.shape[-1]).numpy())
    if not scores:
        return np.zeros(0, np.float32), (np.zeros((0, n_channels), np.float32) if contributions else None)
    return np.concatenate(scores), (np.concatenate(contribs) if contributions else None)


def scored_inputs(raw: np.ndarray, window: int, stride: int, context: int = 0) -> np.ndarray:
    """The rows of `raw` [T, C] that daemon_like_outputs scores, in its order: the points' own values [T', C]."""
    stride, offset = _aligned(len(raw), window, stride, context)
    count = (len(raw) - offset - window) // stride + 1 if len(raw) >= window else 0
    first = offset + window - stride
    return np.asarray(raw[first:first + max(count, 0) * stride])


def scoring_windows(raw: np.ndarray, window: int, stride: int, context: int = 0) -> tuple[np.ndarray, int]:
    """(the windows [N, L, C] daemon_like_outputs scores, as a view, and the stride it uses): scored row r (in
    scored_inputs' order) is one of the last `stride` rows of window r // stride."""
    stride, offset = _aligned(len(raw), window, stride, context)
    if len(raw) < window:
        return np.zeros((0, window) + np.shape(raw)[1:]), stride
    return sliding_windows(np.asarray(raw)[offset:], window, stride), stride


def scored_window_medians(raw: np.ndarray, window: int, stride: int, context: int = 0) -> np.ndarray:
    """For each row scored_inputs returns, each channel's median over the window that scored it [T', C]."""
    windows, stride = scoring_windows(raw, window, stride, context)
    medians = [np.median(windows[i:i + BATCH], axis=1) for i in range(0, len(windows), BATCH)]
    if not medians:
        return np.zeros((0,) + np.shape(raw)[1:])
    return np.repeat(np.concatenate(medians), stride, axis=0)


def calibrate(scores: np.ndarray, init_level: float) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < 10:
        raise DataError(f"calibration needs at least 10 validation scores, got {scores.size}: raise "
                        "train.val_fraction, lower model.window, or give more training data")
    if not np.isfinite(scores).all():
        raise DataError(f"the model produced {int((~np.isfinite(scores)).sum())} non-finite validation scores")
    t = float(np.quantile(scores, init_level))
    peaks = scores[scores > t] - t
    keep = np.linspace(0, len(peaks) - 1, min(len(peaks), MAX_PEAKS)).round().astype(int) if len(peaks) else []
    kept = [float(v) for v in peaks[keep]]
    sample_idx = np.linspace(0, len(scores) - 1, min(len(scores), MAX_SAMPLE)).round().astype(int)
    return {
        "n": int(scores.size),
        "quantiles": {str(q): float(np.quantile(scores, q)) for q in QUANTILES},
        "pot": {"init_threshold": t, "n_init": int(scores.size), "peaks": kept, "n_peaks": int(len(peaks)),
                "init_level": init_level,
                # the GPD fit of `peaks` the daemon's POT threshold starts from: fitted here once, not by the
                # daemon for each bundle it serves (streamdet/pipeline/thresholds.py uses it if its version fits)
                "gpd": fit_record(fit_gpd(np.asarray(kept, dtype=np.float64)), len(kept))},
        "sample": [float(v) for v in scores[sample_idx]],
        "mean": float(scores.mean()),
        "std": float(scores.std()),
    }
