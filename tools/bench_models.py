#!/usr/bin/env python3
"""Measure every registered detector: parameters, training seconds per epoch on one SMD machine, CPU scoring speed.

    python tools/bench_models.py                       # default presets, machine-1-2, 2,000 training windows
    python tools/bench_models.py --quick               # tiny presets, 300 windows (seconds; used to smoke-test)
    python tools/bench_models.py --models usad,tranad --threads 2
    python tools/bench_models.py --quick --entity synthetic-0 --set data.dataset=synthetic   # no download needed

Prints one markdown table (the one in docs/models.md). Training time is one epoch over `--windows` windows of
length `--window` (batch 128, AdamW), the way `streamdet train` runs it; scoring is windows/s of the exported
TorchScript bundle at batch 64 on the CPU, median of `--repeats` timed calls after warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdet.bundle import export_bundle  # noqa: E402
from streamdet.config import load_config  # noqa: E402
from streamdet.data import load_series, sliding_windows  # noqa: E402
from streamdet.models import registry  # noqa: E402
from streamdet.train.trainer import fit  # noqa: E402


def measure(name: str, windows: np.ndarray, cfg, preset: str, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    L, C = windows.shape[1:]
    model = registry.build(name, C, L, preset)
    started = time.perf_counter()
    result = fit(model, windows, windows[:: max(1, len(windows) // 200)], cfg.train, progress=False)
    train_s = result.seconds_per_epoch if result.epochs else time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_bundle(model, Path(tmp) / "b.pt", channels=[f"c{i}" for i in range(C)], mean=np.zeros(C),
                               std=np.ones(C), calibration={"n": 1, "sample": [1.0]}, training={}, config={})
        x = torch.from_numpy(np.ascontiguousarray(windows[:batch]))
        timings = []
        with torch.inference_mode():
            for i in range(repeats + 2):
                t0 = time.perf_counter()
                bundle.module(x)
                if i >= 2:
                    timings.append(time.perf_counter() - t0)
    return {"model": name, "params": sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers()), "train_s_epoch": train_s,
        "windows_s": batch / float(np.median(timings)), "trainable": model.trainable}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated registry names (default: all)")
    parser.add_argument("--entity", default="machine-1-2")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--windows", type=int, default=2000, help="training windows per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny presets, 300 windows of 32 steps")
    parser.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = "tiny" if args.quick else "default"
    window, n_windows = (32, 300) if args.quick else (args.window, args.windows)
    cfg = load_config(REPO / "config" / "smd.yaml", ["train.epochs=1", "train.device=cpu", *args.set])
    (series,) = load_series(cfg, [args.entity])
    x = ((series.train - series.train.mean(0)) / (series.train.std(0) + 1e-2)).astype(np.float32)
    all_windows = sliding_windows(x, window, 1)
    windows = np.ascontiguousarray(all_windows[np.linspace(0, len(all_windows) - 1, n_windows).astype(int)])
    names = args.models.split(",") if args.models else registry.names()
    print(f"# {args.entity}: {n_windows} windows of {window} x {windows.shape[2]}, {preset} presets, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print("| model | parameters | training s/epoch | scoring windows/s (batch 64) |")
    print("|---|---:|---:|---:|")
    for name in names:
        row = measure(name, windows, cfg, preset, 64, args.repeats)
        train = f"{row['train_s_epoch']:.1f}" if row["trainable"] else f"{row['train_s_epoch']:.1f} (fit)"
        print(f"| {name} | {row['params']:,} | {train} | {row['windows_s']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
