"""Measure the gap between a simple detector scored offline and the same detector through the pipeline.

    nice -n 10 .venv/bin/python tools/scoring_gap.py --dataset asd --entities 12
    nice -n 10 .venv/bin/python tools/scoring_gap.py --dataset smd --entities 4 --max-refs 20000

Offline = every test row scored once from its own `span`-row window (the rows before it), nearest neighbour
(Euclidean, brute force) among ALL `span`-row windows of the train split, or reconstruction error from a PCA of
them (components for 95 % variance); metric functions from streamdet.evaluate.vus (TSB-AD-equal). Each variant
changes ONE thing against that reference, so each difference in docs/evaluation.md is measured on its own:
normalisation (none / the former global z-score with floored std / robust), reference subsampling, and whether the
first rows of a window get incomplete (edge-padded) context. The other baselines are written here again from their
definitions, on every training row: row PCA, robust z-score, channel-wise nearest neighbour, and Half-Space Trees
as river implements them (an independent implementation). `--cells` adds the pipeline's rows of a tools/benchmark.py
run for the same entities. Prints a markdown table (macro VUS-PR and AUC-PR over the entities).
"""

from __future__ import annotations

import argparse
import json
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

HEAD_SHARE = 0.8  # of the train split the pipeline fits on (config/smd.yaml train.val_fraction 0.2 is the tail)


def span_windows(x: np.ndarray, span: int) -> np.ndarray:
    """The `span` rows ending at each row, flattened; the first rows edge-padded. [T, C] -> [T, span*C]."""
    padded = np.concatenate([np.repeat(x[:1], span - 1, axis=0), x])
    frames = np.lib.stride_tricks.sliding_window_view(padded, span, axis=0)  # [T, C, span]
    return np.ascontiguousarray(frames.transpose(0, 2, 1).reshape(len(x), -1))


def train_windows(train: np.ndarray, span: int) -> np.ndarray:
    """Every `span`-row window of the train split, flattened oldest row first. [T, C] -> [T - span + 1, span*C]."""
    frames = np.lib.stride_tricks.sliding_window_view(train, span, axis=0)  # [T - span + 1, C, span]
    return frames.transpose(0, 2, 1).reshape(-1, span * train.shape[1])


def knn_scores(train: np.ndarray, test: np.ndarray, span: int, max_refs: int, seed: int = 0) -> np.ndarray:
    refs = train_windows(train, span)
    if max_refs and len(refs) > max_refs:
        refs = refs[np.random.default_rng(seed).choice(len(refs), max_refs, replace=False)]
    return _nearest(span_windows(test, span), refs)


def pca_residual(refs: np.ndarray, queries: np.ndarray, variance: float, most: int) -> np.ndarray:
    """Squared residual [Q, D] of each query from the fewest directions explaining `variance` of the references'
    variance, at most `most` of them."""
    centre = refs.mean(axis=0)
    _, sv, vt = np.linalg.svd(refs - centre, full_matrices=False)
    explained = np.cumsum(sv ** 2) / max((sv ** 2).sum(), 1e-12)
    k = min(int((explained < variance).sum()) + 1, most)
    q = queries - centre
    return (q - q @ vt[:k].T @ vt[:k]) ** 2


def pca_scores(train: np.ndarray, test: np.ndarray, span: int, variance: float = 0.95, cap: int = 0,
               newest: bool = False) -> np.ndarray:
    """Squared reconstruction error of each row's `span`-row window, over the whole window or (`newest`, as the
    model scores) over its newest row only."""
    refs = train_windows(train, span)
    error = pca_residual(refs, span_windows(test, span), variance, cap or refs.shape[1])  # [T, span*C], oldest first
    return (error[:, -test.shape[1]:] if newest else error).sum(axis=1)


def pca_row_scores(train: np.ndarray, test: np.ndarray, variance: float = 0.95, cap: int = 0) -> np.ndarray:
    """Row PCA (`pca`): squared reconstruction error of each row from the directions explaining `variance` of every
    training row's variance (at most `cap` of them when cap > 0, as the model's `components`, and C - 1)."""
    most = min(cap or train.shape[1], train.shape[1] - 1)
    return pca_residual(train, test, variance, most).sum(axis=1)


def robust_z_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """`robust_z`: mean over channels of |x - median| / (1.4826 MAD), median and MAD of every training row."""
    median = np.median(train, axis=0)
    mad = np.median(np.abs(train - median), axis=0)
    return (np.abs(test - median) / (1.4826 * mad + 1e-6)).mean(axis=1)


def _nearest(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Distance of each query row to its nearest reference row (brute force)."""
    r = torch.from_numpy(np.ascontiguousarray(refs, dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    return torch.cat([torch.cdist(q[i:i + 4096], r).min(dim=1).values for i in range(0, len(q), 4096)]).numpy()


def knn_channel_scores(train: np.ndarray, test: np.ndarray, span: int, max_refs: int, seed: int = 0) -> np.ndarray:
    """`knn_channel`: per channel, the distance of its `span` values ending at a row to the nearest `span`-value
    stretch of that channel in the first 80 % of the train split (all of them, or `max_refs` drawn), divided by the
    channel's mean such distance over the last 20 % (floored at 5 % of the median channel's); mean over channels."""
    cut = int(len(train) * HEAD_SHARE)
    distances, scales = [], []
    for c in range(train.shape[1]):
        refs = train_windows(train[:cut, c:c + 1], span)  # [M, span]
        if max_refs and len(refs) > max_refs:
            refs = refs[np.random.default_rng(seed + c).choice(len(refs), max_refs, replace=False)]
        scales.append(_nearest(train_windows(train[cut:, c:c + 1], span), refs).mean())
        distances.append(_nearest(span_windows(test[:, c:c + 1], span), refs))
    scale = np.asarray(scales)
    scale = np.maximum(scale, max(0.05 * float(np.median(scale)), 1e-6))
    return (np.stack(distances, axis=1) / scale).mean(axis=1)


def hst_river_scores(train: np.ndarray, test: np.ndarray, trees: int = 25, height: int = 10,
                     seed: int = 0) -> np.ndarray:
    """Half-Space Trees as river implements them (an independent implementation of the paper), the reference window
    as long as the train split so that every training row counts, limits from the training range; no learning on
    the test split (as the pipeline's fitted trees)."""
    from river.anomaly import HalfSpaceTrees

    low, high = train.min(axis=0), train.max(axis=0)
    limits = {c: (float(low[c]), float(high[c]) if high[c] > low[c] else float(low[c]) + 1.0)
              for c in range(train.shape[1])}
    model = HalfSpaceTrees(n_trees=trees, height=height, window_size=len(train), limits=limits, seed=seed)
    for row in train.tolist():
        model.learn_one(dict(enumerate(row)))
    return np.array([model.score_one(dict(enumerate(row))) for row in test.tolist()])


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
        "pca offline, robust, at most 20 components (the model's cap)": ("pca20", "robust", 0, False),
        "pca offline, robust, the newest row's error only (as the model scores)": ("pca_newest", "robust", 0, False),
        "pca offline, robust, the first 80 % of the train rows (the pipeline's head)": ("pca head", "robust", 0, False),
        "pca rows offline, no scaling, 95 % variance": ("pca_rows", "none", 0, False),
        "pca rows offline, robust, 95 % variance": ("pca_rows", "robust", 0, False),
        "pca rows offline, robust, at most 10 components": ("pca_rows10", "robust", 0, False),
        "robust_z offline, every train row": ("robust_z", "none", 0, False),
        "robust_z offline, robust, every train row": ("robust_z", "robust", 0, False),
        "robust_z offline, the first 80 % of the train rows": ("robust_z head", "none", 0, False),
        "knn offline, robust, the first 80 % of the train rows (the pipeline's head)": ("knn head", "robust", m, False),
        "knn_channel offline, no scaling, all refs": ("knn_channel", "none", m, False),
        "knn_channel offline, robust, all refs": ("knn_channel", "robust", m, False),
        "knn_channel offline, robust, 2,000 refs": ("knn_channel", "robust", 2000, False),
        "hst offline (river), every train row": ("hst_river", "none", 0, False),
    }


def score_method(method: str, train: np.ndarray, test: np.ndarray, span: int, max_refs: int) -> np.ndarray:
    return {"knn": lambda: knn_scores(train, test, span, max_refs),
            "pca": lambda: pca_scores(train, test, span),
            "pca20": lambda: pca_scores(train, test, span, cap=20),
            "pca_newest": lambda: pca_scores(train, test, span, newest=True),
            "pca_rows": lambda: pca_row_scores(train, test),
            "pca_rows10": lambda: pca_row_scores(train, test, cap=10),
            "robust_z": lambda: robust_z_scores(train, test),
            "knn_channel": lambda: knn_channel_scores(train, test, span, max_refs),
            "hst_river": lambda: hst_river_scores(train, test)}[method]()


def score_variant(series, method, norm, max_refs, cut, span):
    """A method name ending in " head" fits (scaling included) on the first 80 % of the train split only, as the
    pipeline does (the rest is its validation tail)."""
    method, _, head = method.partition(" ")
    rows = series.train[:int(len(series.train) * HEAD_SHARE)] if head else series.train
    offset, scale = fit_scaling([rows], norm)
    train = (rows - offset) / scale
    test = (series.test - offset) / scale
    if cut:  # score in disjoint windows of `span` rows, each row seeing only its window's earlier rows
        out = []
        for lo in range(0, len(test), span):
            out.append(score_method(method, train, test[lo:lo + span], span, max_refs))
        return np.concatenate(out)
    return score_method(method, train, test, span, max_refs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="asd")
    p.add_argument("--entities", type=int, default=12, help="first N entities")
    p.add_argument("--span", type=int, default=10)
    p.add_argument("--max-refs", type=int, default=0, help="cap on reference windows (0 = all)")
    p.add_argument("--only", default="", help="comma-separated substrings of variant names to run")
    p.add_argument("--cells", action="append", default=[],
                   help="a tools/benchmark.py cells.json whose rows of this dataset are printed for the same entities")
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
    for path in args.cells:
        for row in pipeline_rows(Path(path), args.dataset, names):
            print(row)
    return 0


def pipeline_rows(path: Path, dataset: str, names: list[str]) -> list[str]:
    """Table rows of the per-entity cells of `dataset` in a cells.json that cover every entity in `names`: macro
    VUS-PR and AUC-PR over those entities, as the rows above."""
    rows = []
    for cell in json.loads(path.read_text()).values():
        report = cell.get("report") or {}
        per_entity = {e["entity"]: e for e in report.get("entities", [])}
        if cell.get("dataset") != dataset or cell.get("mode", "entity") == "fleet" or not set(names) <= set(per_entity):
            continue
        v = np.mean([per_entity[n]["vus_pr"] for n in names])
        a = np.mean([per_entity[n]["auc_pr"] for n in names])
        rows.append(f"| pipeline: {cell['model']} ({path.parent.name}) | {v:.3f} | {a:.3f} | |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
