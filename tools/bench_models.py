#!/usr/bin/env python3
"""Measure every registered detector: parameters, training seconds per epoch on one SMD machine, CPU scoring speed.

    python tools/bench_models.py                       # default presets, machine-1-2, 2,000 training windows
    python tools/bench_models.py --quick               # tiny presets, 300 windows (seconds; used to smoke-test)
    python tools/bench_models.py --models usad,tranad --threads 2
    python tools/bench_models.py --quick --entity synthetic-0 --set data.dataset=synthetic   # no download needed
    python tools/bench_models.py --formats             # scoring windows/s per bundle format (see below)

Prints one markdown table (the one in docs/models.md). Training time is one epoch over `--windows` windows of
length `--window` (batch 128, AdamW), the way `streamdet train` runs it; scoring is windows/s of the exported
TorchScript bundle at batch 64 on the CPU, median of `--repeats` timed calls after warm-up.

`--formats` prints another table instead (the one in docs/models.md, "Bundle formats"): per model and batch size
1/16/64/256, scoring windows/s of the TorchScript bundle, the torch.export bundle as loaded (`scoring.compile: none`)
and the same bundle compiled for this CPU with AOTInductor (`scoring.compile: aoti`), and the compile time. Weights
are untrained (speed does not depend on them); each cell is the median of `--repeats` timings of at least 0.2 s, the three formats taking turns.
`--heap` keeps freed memory in glibc's heap (mallopt: no mmap, no trim) so that no format pays page faults for its
intermediates: under the default allocator TorchScript's large per-call buffers are fresh mmaps that fault on first
touch (thousands of faults per call), the compiled model's planned buffers far less; `--faults` adds minor page faults
per call to each row.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdet.bundle import export_bundle, load_bundle  # noqa: E402
from streamdet.bundle.serving import prepare  # noqa: E402
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


def windows_per_second(modules: list, x: torch.Tensor, repeats: int, clock=time.perf_counter) -> list[float]:
    """Median windows/s of each `module(x)` over `repeats` timings of at least 0.2 s, after two warm-up calls; the
    modules take turns within each repeat, so that a busy spell of the machine slows all of them alike. `clock`
    time.process_time counts this process's CPU seconds only (one scoring thread): on a shared machine that leaves
    out the time other jobs held the core."""
    rates: list[list[float]] = [[] for _ in modules]
    with torch.inference_mode():
        for module in modules:
            module(x)
            module(x)
        for _ in range(repeats):
            for i, module in enumerate(modules):
                calls, started, spent = 0, time.perf_counter(), clock()
                while calls == 0 or time.perf_counter() - started < 0.2:
                    module(x)
                    calls += 1
                rates[i].append(len(x) * calls / (clock() - spent))
    return [float(np.median(r)) for r in rates]


def faults_per_call(module, x: torch.Tensor, calls: int = 5) -> float:
    """Minor page faults of this process per `module(x)` call."""
    with torch.inference_mode():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            module(x)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def keep_freed_memory() -> None:
    """glibc: serve every allocation from the heap and never return it (M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD
    4 GiB), what MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ do, from inside the process."""
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(-3, 1 << 30) and libc.mallopt(-1, ctypes.c_int(2**31 - 1))):
        raise SystemExit("--heap: mallopt failed (not glibc?)")


def measure_formats(name: str, windows: np.ndarray, preset: str, batches: list[int], repeats: int,
                    tmp: Path, clock=time.perf_counter) -> tuple[dict, float]:
    """{batch: (torchscript, export, aoti) windows/s, then the three formats' page faults per call}, compile seconds
    (0 when it fell back)."""
    torch.manual_seed(0)
    L, C = windows.shape[1:]
    model = registry.build(name, C, L, preset)
    model.prepare(torch.from_numpy(windows[:256]))  # fitted models need their statistics; trained weights don't
    model.eval()
    common = dict(channels=[f"c{i}" for i in range(C)], mean=np.zeros(C), std=np.ones(C),
                  calibration={"n": 1, "sample": [1.0]}, training={}, config={"preset": preset})
    scripted = export_bundle(model, tmp / f"{name}.pt", **common)
    exported = export_bundle(model, tmp / f"{name}.pt2", bundle_format="export", **common)
    compiled = prepare(load_bundle(exported.path), "aoti", tmp / "aoti")
    seconds = compiled.serving["seconds"] if compiled.serving["compile"] == "aoti" else 0.0
    rows = {}
    for batch in batches:
        x = torch.from_numpy(np.ascontiguousarray(windows[np.arange(batch) % len(windows)]))
        modules = [b.module for b in (scripted, exported, compiled)]
        rows[batch] = tuple(windows_per_second(modules, x, repeats, clock)) + tuple(
            faults_per_call(m, x) for m in modules)
    return rows, seconds


def formats_table(names: list[str], windows: np.ndarray, preset: str, repeats: int, clock=time.perf_counter,
                  faults: bool = False) -> None:
    extra = " page faults per call (TS / exported / AOTI) |" if faults else ""
    print("| model | batch | TorchScript | exported | AOTInductor | AOTI / TorchScript | compile |" + extra)
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if faults else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows, seconds = measure_formats(name, windows, preset, [1, 16, 64, 256], repeats, Path(tmp), clock)
            for batch, (ts, ep, ao, *counts) in rows.items():
                compile_s = f"{seconds:.0f} s" if batch == 1 else ""
                tail = f" {' / '.join(f'{c:,.0f}' for c in counts)} |" if faults else ""
                print(f"| {name} | {batch} | {ts:,.0f} | {ep:,.0f} | {ao:,.0f} | {ao / ts:.2f}x | {compile_s} |{tail}",
                      flush=True)


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
    parser.add_argument("--formats", action="store_true", help="scoring windows/s per bundle format instead")
    parser.add_argument("--cpu-time", action="store_true",
                        help="--formats: windows per CPU second of this process (1 thread; a shared machine)")
    parser.add_argument("--heap", action="store_true",
                        help="--formats: glibc keeps freed memory (no per-call page faults in any format)")
    parser.add_argument("--faults", action="store_true", help="--formats: minor page faults per call per format")
    args = parser.parse_args(argv)
    if args.heap:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    preset = "tiny" if args.quick else "default"
    window, n_windows = (32, 300) if args.quick else (args.window, args.windows)
    cfg = load_config(REPO / "config" / "smd.yaml", ["train.epochs=1", "train.device=cpu", *args.set])
    (series,) = load_series(cfg, [args.entity])
    x = ((series.train - series.train.mean(0)) / (series.train.std(0) + 1e-2)).astype(np.float32)
    all_windows = sliding_windows(x, window, 1)
    windows = np.ascontiguousarray(all_windows[np.linspace(0, len(all_windows) - 1, n_windows).astype(int)])
    names = args.models.split(",") if args.models else registry.names()
    if args.formats:
        print(f"# {args.entity}: windows of {window} x {windows.shape[2]}, {preset} presets, untrained weights, "
              f"{args.threads} thread(s), torch {torch.__version__}, windows/s"
              f"{' per CPU second' if args.cpu_time else ''}{', heap kept (--heap)' if args.heap else ''}")
        formats_table(names, windows, preset, args.repeats, time.process_time if args.cpu_time else time.perf_counter,
                      args.faults)
        return 0
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
