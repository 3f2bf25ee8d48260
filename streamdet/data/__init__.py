"""Datasets as `Series` (train, test, labels, interpretation) for training, backtests, replays and the demo.

Sources (data.dataset): the shared benchmark layout (smd, asd, nab, or any folder under data.root in that layout),
a user's CSV files (csv), and the built-in synthetic generator (synthetic).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import DataError
from .layout import dataset_dir, entities_in, load_entity
from .series import Series, label_segments
from .synthetic import KINDS, generate
from .usercsv import load_csv_series

__all__ = ["Series", "KINDS", "data_available", "generate", "label_segments", "list_entities", "load_series",
           "sliding_windows"]

SYNTHETIC_TRAIN_SHARE = (4, 7)  # of data.synthetic_length: 4,000 train and 3,000 test rows by default


def data_available(cfg) -> bool:
    """Whether the configured dataset can be loaded (the demo falls back to synthetic data when it cannot)."""
    d = cfg.data
    if d.dataset == "synthetic":
        return True
    if d.dataset == "csv":
        return bool(d.csv_train and d.csv_test and cfg.path(d.csv_train).exists() and cfg.path(d.csv_test).exists())
    return (cfg.path(d.root) / d.dataset / "entities.csv").exists()


def list_entities(cfg) -> list[str]:
    """cfg.data.entities, or every entity of the dataset."""
    d = cfg.data
    if d.entities:
        return list(d.entities)
    if d.dataset == "synthetic":
        return [f"synthetic-{i}" for i in range(d.synthetic_entities)]
    if d.dataset == "csv":
        return ["csv"]
    return entities_in(dataset_dir(cfg.path(d.root), d.dataset))


def load_series(cfg, entities: Optional[list[str]] = None) -> list[Series]:
    names = list(entities) if entities else list_entities(cfg)
    d = cfg.data
    if d.dataset == "synthetic":
        return [_synthetic(cfg, name) for name in names]
    if d.dataset == "csv":
        if not d.csv_train or not d.csv_test:
            raise DataError("data.csv_train and data.csv_test must be set when data.dataset is csv")
        labels = cfg.path(d.csv_labels) if d.csv_labels else None
        return [load_csv_series(names[0], cfg.path(d.csv_train), cfg.path(d.csv_test), labels, d.timestamp_column)]
    folder = dataset_dir(cfg.path(d.root), d.dataset)
    return [load_entity(folder, name, d.timestamp_column) for name in names]


def _synthetic(cfg, name: str) -> Series:
    d = cfg.data
    prefix, _, number = name.rpartition("-")
    if prefix != "synthetic" or not number.isdigit():
        raise DataError(f"data.entities: {name!r} is not a synthetic entity (expected synthetic-0, synthetic-1, ...)")
    n_train = d.synthetic_length * SYNTHETIC_TRAIN_SHARE[0] // SYNTHETIC_TRAIN_SHARE[1]
    return generate(name, seed=d.synthetic_seed * 10_007 + int(number), n_channels=d.synthetic_channels,
                    train_length=n_train, test_length=d.synthetic_length - n_train,
                    train_anomalies=d.synthetic_train_anomalies)


def sliding_windows(x: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """[T, C] -> [N, L, C] windows starting every `stride` rows: a read-only view, no copy."""
    if len(x) < window:
        raise DataError(f"series of {len(x)} rows is shorter than the window ({window})")
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # [T-L+1, C, L]
    return view[::stride].transpose(0, 2, 1)  # [N, L, C]
