"""A user's own metrics as CSV files (data.dataset: csv): header = channel names, one row per time step.

`data.csv_train` and `data.csv_test` are required; `data.csv_labels` (one column `label`) is optional: without it
the test split is unlabelled (all zeros) and only threshold-free statistics of the scores make sense. A timestamp
column (`data.timestamp_column`, or detected: timestamps.py) is not a channel: it gives the rows their times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .csvread import read_numeric_csv
from .series import Series
from .timestamps import read_timed_csv


def load_csv_series(entity: str, train: Path, test: Path, labels: Optional[Path],
                    timestamp_column: Optional[str] = None) -> Series:
    channels, x_train, ts_train = read_timed_csv(train, timestamp_column)
    test_channels, x_test, ts_test = read_timed_csv(test, timestamp_column)
    if test_channels != channels:
        raise DataError(f"{test}: columns {test_channels} differ from {train}'s {channels}")
    for path, x in ((train, x_train), (test, x_test)):
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            row, col = bad[0]
            raise DataError(f"{path}: line {row + 2}, column {channels[col]!r} is not a finite number")
    y = np.zeros(len(x_test), dtype=np.int8)
    if labels is not None:
        names, values, _ = read_numeric_csv(labels)
        if names != ["label"] or len(values) != len(x_test):
            raise DataError(f"{labels}: expected one column 'label' with {len(x_test)} rows, got {names} x "
                            f"{len(values)}")
        y = (values[:, 0] > 0).astype(np.int8)
    return Series(entity, channels, x_train, x_test, y, test_timestamps=ts_test, train_timestamps=ts_train)
