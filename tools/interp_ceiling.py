"""How high HitRate@150 % can go on a dataset's interpretation labels when channels are ranked by how far each has
moved, given more and more of the labelled segment: an analysis of issue 19's goal, not a choice of anything.

    .venv/bin/python tools/interp_ceiling.py --dataset smd --set data.root=/work/shared/data

It READS TEST LABELS (the segments and their channels), so nothing it prints may choose a default. For every
interpreted segment each channel's move is |value - median of the `--window` rows before it|, scaled by that
distance's q99 on the last 3,000 train rows (floored with train/attribution.py's SPREAD_FLOOR, as it floors
spreads); the channels are ranked by the largest move over the segment's first k rows, over the whole segment, and
at its k-th row alone. An alert can see only the rows up to the one it fires on; the whole-segment figure is what no
alert-time ranking of moves can exceed by seeing more rows. `--scale std` scales the moves by each channel's train
standard deviation instead. The `cross-channel residual` rows rank each channel by how far it lies from its linear
prediction from the other channels of the same row (fitted on the train split, scaled by its q99 there): what a
model that learns the channels' relations could add to the moves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamdet.config import load_config  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.evaluate.metrics import hit_rate  # noqa: E402
from streamdet.train.attribution import SPREAD_FLOOR  # noqa: E402

TRAIN_ROWS = 3000


def moves(x: np.ndarray, rows: range, window: int) -> np.ndarray:
    """|x[r] - median of the `window` rows before r| for each r in rows (the first row compares with itself)."""
    return np.stack([np.abs(x[r] - np.median(x[max(0, r - window):r] if r > 0 else x[:1], axis=0)) for r in rows])


def move_scale(train: np.ndarray, window: int, kind: str = "q99") -> np.ndarray:
    """Each channel's q99 move on the train split's tail (or, kind "std", its standard deviation there), floored so a
    channel that never moves cannot lead."""
    tail = train[-TRAIN_ROWS:]
    spread = tail.std(axis=0) if kind == "std" else np.quantile(moves(tail, range(len(tail)), window), 0.99, axis=0)
    scale = np.maximum(spread, 1e-9)
    return np.maximum(scale, SPREAD_FLOOR * np.median(scale))


def cross_channel_residual(train: np.ndarray, ridge: float = 0.1):
    """A function of rows [N, C] -> [N, C]: each channel's distance from its least-squares prediction from the
    other channels of its row (standardised on train; the leave-one-out residual read off the ridge-regularised
    precision matrix), in units of that distance's q99 on train."""
    mean, std = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-6)
    z = (train - mean) / std
    precision = np.linalg.inv(z.T @ z / len(z) + ridge * np.eye(z.shape[1]))

    def residual(rows: np.ndarray) -> np.ndarray:
        return np.abs(((rows - mean) / std) @ precision / np.diag(precision))

    scale = np.maximum(np.quantile(residual(train), 0.99, axis=0), 1e-6)
    return lambda rows: residual(rows) / scale


def ranked(values: np.ndarray) -> list[int]:
    return list(np.argsort(-values, kind="stable"))


def segment_rates(test: np.ndarray, scale: np.ndarray, start: int, end: int, truth: set, window: int,
                  firsts: tuple[int, ...]) -> dict[str, float]:
    """HitRate@150 % of one segment under each ranking."""
    seg = moves(test, range(start, end), window) / scale
    out = {f"largest move over its first {k} rows": hit_rate(ranked(seg[:k].max(axis=0)), truth, 150) for k in firsts}
    out.update({f"its row {k} alone": hit_rate(ranked(seg[min(k, len(seg)) - 1]), truth, 150) for k in firsts})
    out["largest move over the whole segment"] = hit_rate(ranked(seg.max(axis=0)), truth, 150)
    return out


def residual_rates(test: np.ndarray, residual, start: int, end: int, truth: set,
                   firsts: tuple[int, ...]) -> dict[str, float]:
    """HitRate@150 % of one segment ranked by the largest cross-channel residual over its first k rows and over all."""
    seg = residual(test[start:end])
    out = {f"largest cross-channel residual over its first {k} rows": hit_rate(ranked(seg[:k].max(axis=0)), truth, 150)
           for k in firsts}
    out["largest cross-channel residual over the whole segment"] = hit_rate(ranked(seg.max(axis=0)), truth, 150)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="smd")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--scale", choices=("q99", "std"), default="q99", help="what a channel's moves are scaled by")
    parser.add_argument("--rows", default="1,3,5,10,20", help="k: the segment's first rows an alert might see")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args(argv)
    firsts = tuple(int(k) for k in args.rows.split(","))
    cfg = load_config(ROOT / "config" / "smd.yaml", [f"data.dataset={args.dataset}", "data.entities=[]", *args.set])
    rates: dict[str, list[float]] = {}
    for series in load_series(cfg):
        scale = move_scale(series.train, args.window, args.scale)
        residual = cross_channel_residual(series.train)
        for start, end, channels in series.interpretation or []:
            truth = set(channels)
            found = segment_rates(series.test, scale, start, end, truth, args.window, firsts)
            found.update(residual_rates(series.test, residual, start, end, truth, firsts))
            for name, value in found.items():
                rates.setdefault(name, []).append(value)
    segments = len(next(iter(rates.values()), []))
    print(f"| channels ranked by | HitRate@150 % |  ({args.dataset}, {segments} interpreted segments, moves scaled by "
          f"{args.scale}; test labels: analysis only)")
    print("|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {np.mean(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
