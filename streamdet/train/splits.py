"""Training data: per-entity train splits cut into a training head and a validation tail, scaled per channel.

The scaling (train/scaling.py, `train.normalisation`) is fitted on the training heads of all entities together (one
offset/scale per channel, recorded in the bundle), not per entity: the daemon can then score an entity it never saw
in training with no per-entity state to ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..data import Series, sliding_windows
from ..errors import DataError
from .scaling import fit_scaling


@dataclass
class Windows:
    """Normalised training and validation windows [N, L, C] (+ labels [N, L] when the train split has them)."""

    train: np.ndarray
    val: np.ndarray
    train_labels: Optional[np.ndarray]
    val_labels: Optional[np.ndarray]
    val_tails: list[np.ndarray]  # raw validation tails per entity, [T_v, C], for calibration
    mean: np.ndarray
    std: np.ndarray


def split_point(n_rows: int, window: int, val_fraction: float, entity: str) -> int:
    """Row where the validation tail starts; both parts must hold at least one window."""
    cut = int(round(n_rows * (1.0 - val_fraction)))
    if cut < window or n_rows - cut < window:
        raise DataError(f"{entity}: train split of {n_rows} rows is too short for window {window} with "
                        f"val_fraction {val_fraction} (each part needs >= {window} rows)")
    return cut


def scaled_windows(parts: list[np.ndarray], window: int, stride: int, cap: int, mean: np.ndarray,
                   std: np.ndarray) -> np.ndarray:
    """Scaled sliding windows [N, L, C] of every part, at most `cap` of them (evenly spread)."""
    out = np.concatenate([sliding_windows((p - mean) / std, window, stride) for p in parts])
    return np.ascontiguousarray(out[evenly(len(out), cap)], dtype=np.float32)


def evenly(n: int, cap: int) -> np.ndarray:
    """Indices of at most `cap` items spread evenly over n (all when cap is 0 or >= n)."""
    if not cap or n <= cap:
        return np.arange(n)
    return np.linspace(0, n - 1, cap).round().astype(np.int64)


def make_windows(series: list[Series], window: int, train_stride: int, val_fraction: float, max_windows: int,
                 normalisation: str) -> Windows:
    channels = series[0].channels
    for s in series[1:]:
        if s.channels != channels:
            raise DataError(f"{s.entity}: channels differ from {series[0].entity}'s; one bundle needs one layout")
    cuts = [split_point(len(s.train), window, val_fraction, s.entity) for s in series]
    heads = [s.train[:c] for s, c in zip(series, cuts)]
    tails = [s.train[c:] for s, c in zip(series, cuts)]
    mean, std = fit_scaling(heads, normalisation)
    has_labels = any(s.train_labels is not None for s in series)

    def windows_of(parts: list[np.ndarray], stride: int, cap: int) -> np.ndarray:
        return scaled_windows(parts, window, stride, cap, mean, std)

    def labels_of(parts: list[tuple[Series, slice]], stride: int, n: int, cap: int) -> Optional[np.ndarray]:
        if not has_labels:
            return None
        ls = []
        for s, part in parts:
            y = s.train_labels[part] if s.train_labels is not None else np.zeros(len(s.train[part]), np.int8)
            ls.append(sliding_windows(y[:, None].astype(np.float32), window, stride)[:, :, 0])
        out = np.concatenate(ls)
        return np.ascontiguousarray(out[evenly(n, cap)])  # [N, L]

    val_stride = max(train_stride, window // 4)
    train_w = windows_of(heads, train_stride, max_windows)
    val_cap = max(max_windows // 4, 256) if max_windows else 0
    val_w = windows_of(tails, val_stride, val_cap)
    n_train = sum(len(sliding_windows(h, window, train_stride)) for h in heads)
    n_val = sum(len(sliding_windows(t, window, val_stride)) for t in tails)
    train_y = labels_of([(s, slice(0, c)) for s, c in zip(series, cuts)], train_stride, n_train, max_windows)
    val_y = labels_of([(s, slice(c, None)) for s, c in zip(series, cuts)], val_stride, n_val, val_cap)
    return Windows(train_w, val_w, train_y, val_y, tails, mean, std)
