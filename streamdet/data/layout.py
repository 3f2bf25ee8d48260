"""Loader for the shared benchmark layout (../shared/data/README.md): SMD, ASD, NAB, and any folder in that layout.

Any folder under data.root holding entities.csv and ENTITY.{train,test,test_label}.csv.gz is a dataset
(data.dataset: its name). Outside SMD and ASD (whose parsed arrays are cached), a timestamp column in the CSV files
(data.timestamp_column, or detected: timestamps.py) gives the rows their times instead of being a channel.

Every dataset folder holds `entities.csv` and, per entity, `ENTITY.train.csv.gz`, `ENTITY.test.csv.gz`,
`ENTITY.test_label.csv.gz`, and for SMD/ASD `ENTITY.interpretation_label.txt` (`start-end:d1,d2`, 1-based channel
numbers). SMD's `end` is exclusive, ASD's is inclusive (both checked against the labels in the data READMEs);
`Series.interpretation` always holds end-exclusive ranges.

NAB has no train file: the first min(15 %, 750) rows of each stream (NAB's probationary period, where its scorer
ignores detections; 15 % alone trained on up to 3,000 rows that NAB scores in its longest files) are the train split (its labels are not used: `train_labels` stays None), and the test split is the whole
stream, so scores exist for every row NAB's scorer reads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .cache import cached_parse
from .csvread import read_numeric_csv, read_text
from .series import Series
from .timestamps import read_timed_csv

NAB_PROBATION = 0.15  # of a stream's rows, and at most NAB_PROBATION x 5000 rows (NAB's scorer, sweeper.py)
INCLUSIVE_END = {"asd"}  # datasets whose interpretation ranges include `end`
CACHED = {"smd", "asd"}  # numeric-only benchmark folders whose parsed arrays are cached (data/cache.py)


def dataset_dir(root: Path, dataset: str) -> Path:
    folder = root / dataset
    if not folder.resolve().is_relative_to(root.resolve()):
        raise DataError(f"data.dataset: {dataset!r} is not a folder under data.root ({root})")
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found (set data.root or STREAMDET_DATA; see README "
                        "'Getting the data')")
    if not (folder / "entities.csv").exists():
        raise DataError(f"{folder}: not a dataset in the shared layout (no entities.csv; see "
                        f"{root / 'README.md'})")
    return folder


def entities_in(folder: Path) -> list[str]:
    """Entity names from entities.csv, in file order."""
    text = read_text(folder / "entities.csv")
    rows = [line.split(",", 1)[0].strip() for line in text.splitlines()[1:] if line.strip()]
    if not rows:
        raise DataError(f"{folder / 'entities.csv'}: no entities listed")
    return rows


def load_entity(folder: Path, entity: str, timestamp_column: Optional[str] = None) -> Series:
    if not (folder / f"{entity}.test.csv.gz").exists():
        raise DataError(f"{folder / (entity + '.test.csv.gz')}: unknown entity {entity!r} (not found)")
    if folder.name == "nab":
        return _load_nab(folder, entity)
    if folder.name not in CACHED:
        return _load_timed(folder, entity, timestamp_column)
    channels, train = cached_parse(folder / f"{entity}.train.csv.gz", _numeric)
    test_channels, test = cached_parse(folder / f"{entity}.test.csv.gz", _numeric)
    if test_channels != channels:
        raise DataError(f"{folder / (entity + '.test.csv.gz')}: columns differ from the train file's")
    labels = _labels(folder / f"{entity}.test_label.csv.gz", len(test))
    interp = _interpretation(folder / f"{entity}.interpretation_label.txt", len(channels),
                             inclusive_end=folder.name in INCLUSIVE_END)
    return Series(entity, channels, train, test, labels, interpretation=interp)


def _load_timed(folder: Path, entity: str, timestamp_column: Optional[str]) -> Series:
    channels, train, train_ts = read_timed_csv(folder / f"{entity}.train.csv.gz", timestamp_column)
    test_channels, test, test_ts = read_timed_csv(folder / f"{entity}.test.csv.gz", timestamp_column)
    if test_channels != channels:
        raise DataError(f"{folder / (entity + '.test.csv.gz')}: columns differ from the train file's")
    labels = _labels(folder / f"{entity}.test_label.csv.gz", len(test))
    interp = _interpretation(folder / f"{entity}.interpretation_label.txt", len(channels), inclusive_end=False)
    return Series(entity, channels, train, test, labels, interpretation=interp, test_timestamps=test_ts,
                  train_timestamps=train_ts)


def _numeric(path: Path) -> tuple[list[str], np.ndarray]:
    names, values, _ = read_numeric_csv(path)
    return names, values


def _load_nab(folder: Path, entity: str) -> Series:
    path = folder / f"{entity}.test.csv.gz"
    channels, values, stamps = read_numeric_csv(path, skip_columns=1)
    labels = _labels(folder / f"{entity}.test_label.csv.gz", len(values))
    try:
        ts = np.array(stamps, dtype="datetime64[s]").astype(np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: timestamp column cannot be parsed ({exc})") from None
    n_train = max(nab_probation(len(values)), 2)
    return Series(entity, channels, values[:n_train].copy(), values, labels, test_timestamps=ts)


def nab_probation(n_rows: int) -> int:
    """Rows NAB's scorer ignores at the start of a stream of n_rows: the only rows a detector may learn from."""
    return int(min(math.floor(NAB_PROBATION * n_rows), NAB_PROBATION * 5000))


def _labels(path: Path, n_rows: int) -> np.ndarray:
    names, values, _ = read_numeric_csv(path)
    if names != ["label"]:
        raise DataError(f"{path}: expected one column named 'label', got {names}")
    if len(values) != n_rows:
        raise DataError(f"{path}: {len(values)} labels for {n_rows} test rows")
    return (values[:, 0] > 0).astype(np.int8)


def _interpretation(path: Path, n_channels: int, inclusive_end: bool) -> list[tuple[int, int, list[int]]]:
    """(start, end_exclusive, 0-based channels) per line of an interpretation_label file."""
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            span, dims = line.strip().split(":")
            start, end = (int(v) for v in span.split("-"))
            channels = sorted({int(d) - 1 for d in dims.split(",") if d.strip()})
        except ValueError:
            raise DataError(f"{path}: line {number}: expected 'start-end:d1,d2,...', got {line.strip()!r}") from None
        if not channels or channels[0] < 0 or channels[-1] >= n_channels:
            raise DataError(f"{path}: line {number}: channel numbers outside 1..{n_channels}")
        out.append((start, end + 1 if inclusive_end else end, channels))
    return out
