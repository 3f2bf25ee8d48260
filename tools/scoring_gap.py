"""Measure the gap between a simple detector scored offline and the same detector through the pipeline.

    nice -n 10 .venv/bin/python tools/scoring_gap.py --dataset asd --entities 12
    nice -n 10 .venv/bin/python tools/scoring_gap.py --dataset smd --entities 4 --max-refs 20000

Offline = every test row scored once from its own `span`-row window (the rows before it), nearest neighbour
(Euclidean, brute force) among ALL `span`-row windows of the train split, or reconstruction error from a PCA of
them (components for 95 % variance); metric functions from streamdet.evaluate.vus (TSB-AD-equal). Each variant
changes ONE thing against that reference, so each difference in docs/evaluation.md is measured on its own:
normalisation (none / the former global z-score with floored std / robust), reference subsampling, and whether the
first rows of a window get incomplete (edge-padded) context. The pipeline rows come from tools/benchmark.py.
Prints a markdown table (macro VUS-PR and AUC-PR over the entities).
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

from streamdet.config import load_config  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.evaluate.vus import auc_pr, vus  # noqa: E402
from streamdet.train.scaling import fit_scaling  # noqa: E402


def span_windows(x: np.ndarray, span: int) -> np.ndarray:
    """The `span` rows ending at each row, flattened; the first rows edge-padded. [T, C] -> [T, span*C]."""
    padded = np.concatenate([np.repeat(x[:1], span - 1, axis=0), x])
    frames = np.lib.stride_tricks.sliding_window_view(padded, span, axis=0)  # [T, C, span]
    return np.ascontiguousarray(frames.transpose(0, 2, 1).reshape(len(x), -1))


def knn_scores(train: np.ndarray, test: np.ndarray, span: int, max_refs: int, seed: int = 0) -> np.ndarray:
    refs = np.lib.stride_tricks.sliding_window_view(train, span, axis=0).transpose(0, 2, 1).reshape(-1, span * train.shape[1])
    if max_refs and len(refs) > max_refs:
        refs = refs[np.random.default_rng(seed).choice(len(refs), max_refs, replace=False)]
    r = torch.from_numpy(np.ascontiguousarray(refs, dtype=np.float32))
    q = torch.from_numpy(span_windows(test, span).astype(np.float32))
    out = [torch.cdist(q[i:i + 2048], r).min(dim=1).values for i in range(0, len(q), 2048)]
    return torch.cat(out).numpy()


def pca_scores(train: np.ndarray, test: np.ndarray, span: int, variance: float = 0.95) -> np.ndarray:
    refs = np.lib.stride_tricks.sliding_window_view(train, span, axis=0).transpose(0, 2, 1).reshape(-1, span * train.shape[1])
    centre = refs.mean(axis=0)
    _, sv, vt = np.linalg.svd(refs - centre, full_matrices=False)
    explained = np.cumsum(sv ** 2) / max((sv ** 2).sum(), 1e-12)
    k = int((explained < variance).sum()) + 1
    q = span_windows(test, span) - centre
    return ((q - q @ vt[:k].T @ vt[:k]) ** 2).sum(axis=1)


def metrics(labels: np.ndarray, scores: np.ndarray, skip: int) -> tuple[float, float]:
    """VUS-PR and AUC-PR; the first `skip` rows (no full context) rank lowest, as unscored rows do in reports."""
    s = scores.astype(np.float64).copy()
    s[:skip] = s.min()
    return vus(labels, s, 100)["vus_pr"], auc_pr(labels, s)


def variants(args):
    """name -> (method, normalisation, max_refs, pad_context)."""
    m = args.max_refs
    return {
        "knn offline, no scaling, all refs": ("knn", "none", m, False),
        "knn offline, global z (floored std)": ("knn", "global", m, False),
        "knn offline, robust": ("knn", "robust", m, False),
        "knn offline, no scaling, 1,000 refs": ("knn", "none", 1000, False),
        "knn offline, no scaling, context cut at 10-row windows": ("knn", "none", m, True),
        "pca offline, no scaling": ("pca", "none", 0, False),
        "pca offline, global z (floored std)": ("pca", "global", 0, False),
        "pca offline, robust": ("pca", "robust", 0, False),
    }


def score_variant(series, method, norm, max_refs, cut, span):
    offset, scale = fit_scaling([series.train], norm)
    train = (series.train - offset) / scale
    test = (series.test - offset) / scale
    if cut:  # score in disjoint windows of `span` rows, each row seeing only its window's earlier rows
        out = []
        for lo in range(0, len(test), span):
            chunk = test[lo:lo + span]
            s = knn_scores(train, chunk, span, max_refs) if method == "knn" else pca_scores(train, chunk, span)
            out.append(s)
        return np.concatenate(out)
    return knn_scores(train, test, span, max_refs) if method == "knn" else pca_scores(train, test, span)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="asd")
    p.add_argument("--entities", type=int, default=12, help="first N entities")
    p.add_argument("--span", type=int, default=10)
    p.add_argument("--max-refs", type=int, default=0, help="cap on reference windows (0 = all)")
    p.add_argument("--only", default="", help="comma-separated substrings of variant names to run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(str(ROOT / "config" / "smd.yaml"), [f"data.dataset={args.dataset}"])
    names = [line.split(",")[0] for line in (cfg.path(cfg.data.root) / args.dataset / "entities.csv").read_text()
             .splitlines()[1:] if line.strip()][:args.entities]
    series = load_series(cfg, names)
    print(f"| variant ({args.dataset}, {len(names)} entities, span {args.span}) | VUS-PR | AUC-PR | seconds |")
    print("|---|---|---|---|")
    for name, (method, norm, refs, cut) in variants(args).items():
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        started = time.perf_counter()
        values = [metrics(np.asarray(s.test_labels), score_variant(s, method, norm, refs, cut, args.span),
                          args.span - 1) for s in series]
        v, a = np.mean(values, axis=0)
        print(f"| {name} | {v:.3f} | {a:.3f} | {time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
