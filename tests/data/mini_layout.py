"""A miniature of the shared benchmark layout (../shared/data/README.md) written from the synthetic generator.

It lets the loaders' format rules run in a fresh clone: SMD's end-exclusive and ASD's end-inclusive interpretation
ranges, NAB's probationary train split and timestamp column, the parse cache, entities.csv. The files are written the
way the shared ones are (checked against them by eye: header rows, `label` column, `start-end:1-based channels`);
tests/data/test_loaders.py also checks the real files when they are there.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from streamdet.data import Series, generate

ROWS = 300  # per split
ENTITIES = {"smd": "machine-9-1", "asd": "omi-99", "nab": "realKnownCause/mini"}
NAB_START = np.datetime64("2014-07-01T00:00:00")
NAB_STEP_S = 1800  # NAB's taxi stream: one value every 30 minutes


def write_layout(root: Path) -> Series:
    """Write smd/, asd/ and nab/ under `root`, one entity each, from one generated Series (returned)."""
    series = generate("mini", seed=7, n_channels=4, train_length=ROWS, test_length=ROWS, test_anomalies=3)
    for dataset in ("smd", "asd"):
        folder = _dataset(root, dataset, series, dims=len(series.channels))
        entity = ENTITIES[dataset]
        _write_csv(folder / f"{entity}.train.csv.gz", series.channels, series.train)
        _write_csv(folder / f"{entity}.test.csv.gz", series.channels, series.test)
        _write_labels(folder / f"{entity}.test_label.csv.gz", series.test_labels)
        inclusive = dataset == "asd"
        lines = [f"{start}-{end - 1 if inclusive else end}:{','.join(str(c + 1) for c in channels)}"
                 for start, end, channels in series.interpretation]
        (folder / f"{entity}.interpretation_label.txt").write_text("\n".join(lines) + "\n")
    folder = _dataset(root, "nab", series, dims=1)
    stamps = NAB_START + np.arange(ROWS) * np.timedelta64(NAB_STEP_S, "s")
    rows = [f"{str(t).replace('T', ' ')},{v:.6f}" for t, v in zip(stamps, series.test[:, 0])]
    _write_text(folder / f"{ENTITIES['nab']}.test.csv.gz", ["timestamp,value", *rows])
    _write_labels(folder / f"{ENTITIES['nab']}.test_label.csv.gz", series.test_labels)
    return series


def _dataset(root: Path, dataset: str, series: Series, dims: int) -> Path:
    folder = root / dataset
    (folder / ENTITIES[dataset]).parent.mkdir(parents=True, exist_ok=True)
    points = int(series.test_labels.sum())
    train_rows = 0 if dataset == "nab" else ROWS
    (folder / "entities.csv").write_text("entity,train_rows,test_rows,dims,test_anomaly_points,test_anomaly_ratio\n"
                                         f"{ENTITIES[dataset]},{train_rows},{ROWS},{dims},{points},"
                                         f"{points / ROWS:.6f}\n")
    return folder


def _write_csv(path: Path, header: list[str], values: np.ndarray) -> None:
    _write_text(path, [",".join(header), *(",".join(f"{v:.6f}" for v in row) for row in values)])


def _write_labels(path: Path, labels: np.ndarray) -> None:
    _write_text(path, ["label", *(str(int(v)) for v in labels)])


def _write_text(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
