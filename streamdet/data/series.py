"""The in-memory form of one entity of a dataset, shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Series:
    """One independent multivariate series: train on `train`, score `test`.

    `interpretation` lists labelled anomaly segments with the channels that explain them:
    (start, end_exclusive, 0-based channel indices). `segment_kinds` names the injected kind of each labelled test
    segment, `train_segment_kinds` of each labelled train segment (synthetic data only). `test_timestamps` are
    seconds since the epoch when the dataset has them (NAB, CSV files with a timestamp column), as are
    `train_timestamps`.
    """

    entity: str
    channels: list[str]
    train: np.ndarray  # [T, C] float32
    test: np.ndarray  # [T2, C] float32
    test_labels: np.ndarray  # [T2] int8
    train_labels: Optional[np.ndarray] = None  # [T] int8, only when the train split carries labelled anomalies
    interpretation: list[tuple[int, int, list[int]]] = field(default_factory=list)
    segment_kinds: list[tuple[int, int, str]] = field(default_factory=list)
    train_segment_kinds: list[tuple[int, int, str]] = field(default_factory=list)
    test_timestamps: Optional[np.ndarray] = None  # [T2] float64
    train_timestamps: Optional[np.ndarray] = None  # [T] float64 (CSV files with a timestamp column)


def label_segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """(start, end_exclusive) of each run of 1s in a 0/1 vector."""
    padded = np.concatenate([[0], (np.asarray(labels) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
