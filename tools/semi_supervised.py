"""sd_mae's semi-supervised mode (issue 19 item 5): detection with 0, 5, 20 and 50 labelled anomalous windows.

    nice -n 10 .venv/bin/python tools/semi_supervised.py                     # synthetic + 2 SMD machines
    nice -n 10 .venv/bin/python tools/semi_supervised.py --smd-machines 0    # synthetic only (~3 min)

Synthetic: one generator entity whose train split carries `--train-anomalies` segments of all five kinds (spike,
noise, drift, trend, frequency); every setting trains on the same windows, and k of the windows that hold an
anomaly keep their labels (the others stay in training, unlabelled: contamination the margin must overcome).
SMD: the train split has no labels, so labels come from the neighbourhood of the train split: the first
`--smd-labelled-share` of the test split joins training with its labels available for k windows, and detection is
measured on the rest of the test split only. Scores are the daemon's (`daemon_like_scores`: a window every stride
rows, its newest stride steps kept); AUC-PR and AUC-ROC are threshold-free, against the evaluation part's labels.
Prints a markdown table (the one in docs/models.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamdet.bundle import ServedModel  # noqa: E402
from streamdet.config import TrainConfig, load_config  # noqa: E402
from streamdet.data import generate, load_series, sliding_windows  # noqa: E402
from streamdet.evaluate.vus import auc_pr, auc_roc  # noqa: E402
from streamdet.models import registry  # noqa: E402
from streamdet.train.calibration import daemon_like_scores, first_scored_row  # noqa: E402
from streamdet.train.trainer import fit  # noqa: E402

LABELLED = (0, 5, 20, 50)


def windows_with_labels(train: np.ndarray, labels: np.ndarray, window: int, stride: int, keep: int, seed: int):
    """Normalised training windows [N, L, C] and their labels [N, L], labels kept on `keep` anomalous windows."""
    x = np.ascontiguousarray(sliding_windows(train, window, stride), dtype=np.float32)
    y = np.ascontiguousarray(sliding_windows(labels[:, None], window, stride)[..., 0], dtype=np.float32)
    anomalous = np.flatnonzero(y.any(axis=1))
    chosen = np.random.default_rng(seed).permutation(anomalous)[:keep]
    kept = np.zeros_like(y)
    kept[chosen] = y[chosen]
    return x, kept, len(anomalous)


def run_setting(train, labels, test, test_labels, keep: int, args) -> dict:
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    normalised = ((train - mean) / std).astype(np.float32)
    x, y, n_anomalous = windows_with_labels(normalised, labels, args.window, args.stride, keep, args.seed)
    torch.manual_seed(args.seed)
    model = registry.build("sd_mae", train.shape[1], args.window, args.preset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-3, device="cpu", patience=args.epochs,
                      seed=args.seed)
    started = time.perf_counter()
    fit(model, x, x[::10], cfg, train_labels=y if keep else None, progress=False)
    scores = daemon_like_scores(ServedModel(model, mean, std).eval(), test, args.window, args.score_stride)
    first = first_scored_row(args.window, args.score_stride)
    truth = test_labels[first:first + len(scores)]
    return {"labelled": int((y.any(axis=1)).sum()), "anomalous_windows": n_anomalous,
            "auc_pr": auc_pr(truth, scores), "auc_roc": auc_roc(truth, scores),
            "seconds": time.perf_counter() - started}


def synthetic_case(args):
    s = generate("synthetic-semi", seed=args.seed, n_channels=8, train_length=4000, test_length=3000,
                 train_anomalies=args.train_anomalies, test_anomalies=12)
    return "synthetic (8 channels, 5 kinds)", s.train, s.train_labels, s.test, s.test_labels


def smd_cases(args):
    cfg = load_config(ROOT / "config" / "smd.yaml", ["data.dataset=smd"])
    for s in load_series(cfg)[: args.smd_machines]:
        cut = int(len(s.test) * args.smd_labelled_share)
        train = np.concatenate([s.train, s.test[:cut]])
        labels = np.concatenate([np.zeros(len(s.train), np.int8), s.test_labels[:cut]])
        yield f"SMD {s.entity} (labels from test rows 0-{cut})", train, labels, s.test[cut:], s.test_labels[cut:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--stride", type=int, default=4, help="training window stride")
    p.add_argument("--score-stride", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--preset", default="tiny", help="sd_mae preset (tiny keeps a run to minutes on 2 cores)")
    p.add_argument("--train-anomalies", type=int, default=10, help="segments injected in the synthetic train split")
    p.add_argument("--smd-machines", type=int, default=2)
    p.add_argument("--smd-labelled-share", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-synthetic", action="store_true", help="SMD rows only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cases = ([] if args.no_synthetic else [synthetic_case(args)]) + (list(smd_cases(args)) if args.smd_machines else [])
    print("| data | labelled anomalous windows (of those holding an anomaly) | AUC-PR | AUC-ROC | train+score s |")
    print("|---|---|---:|---:|---:|")
    for name, train, labels, test, test_labels in cases:
        for keep in LABELLED:
            r = run_setting(train.astype(np.float32), labels, test.astype(np.float32), test_labels, keep, args)
            print(f"| {name} | {r['labelled']} (of {r['anomalous_windows']}) | {r['auc_pr']:.3f} | "
                  f"{r['auc_roc']:.3f} | {r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
