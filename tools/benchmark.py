"""Train and backtest every model and baseline on SMD, ASD and NAB; write docs/RESULTS.md.

    .venv/bin/python tools/benchmark.py                      # everything (hours on a laptop CPU)
    .venv/bin/python tools/benchmark.py --quick              # tiny presets, 1 epoch, 2 entities per dataset
    .venv/bin/python tools/benchmark.py --datasets smd --models pca,knn --entities-limit 5 --epochs 3

Protocol (docs/evaluation.md): one bundle per entity, trained on that entity's train split (`streamdet train`),
then the entity's test split replayed through the live pipeline stages (`streamdet evaluate`); thresholds from the
bundle's calibration only. Rows in the table say exactly which entities and epochs were run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamdet.bundle import load_bundle  # noqa: E402
from streamdet.config import load_config  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.evaluate.backtest import evaluation_config, replay_entity  # noqa: E402
from streamdet.evaluate.metrics import paired_difference  # noqa: E402
from streamdet.evaluate.report import build_report  # noqa: E402
from streamdet.models import registry  # noqa: E402
from streamdet.train import train_bundle  # noqa: E402

log = logging.getLogger("benchmark")
DATASETS = ("smd", "asd", "nab")
BASELINES = ("robust_z", "pca", "pca_window", "knn", "hst")


@dataclass
class Cell:
    """One model x dataset result."""

    dataset: str
    model: str
    entities: list[str]
    epochs: int
    preset: str
    train_seconds: float = 0.0
    score_seconds: float = 0.0
    report: dict = field(default_factory=dict)
    error: str = ""


def dataset_config(args, dataset: str, model: str, entity: str, out: Path):
    """The config of one training + backtest run (config/smd.yaml with the benchmark's overrides)."""
    overrides = [f"data.dataset={dataset}", f"data.entities=[{entity}]", f"model.name={model}",
                 f"train.epochs={args.epochs}", f"model.bundle={out}", f"train.max_windows={args.max_windows}",
                 f"model.window={args.window}"]
    if args.preset:
        overrides.append(f"model.preset={args.preset}")
    return load_config(args.config, overrides + list(args.set))


def train_and_replay(args, dataset: str, model: str, entity: str, work: Path):
    """One entity: train its bundle on its train split, replay its test split. Returns (bundle path, train seconds,
    EntityRun). A top-level function so that --jobs can run it in a worker process."""
    torch.set_num_threads(1)
    cfg = dataset_config(args, dataset, model, entity, work / dataset / model / f"{entity.replace('/', '__')}.pt")
    started = time.perf_counter()
    bundle = train_bundle(cfg, model_name=model, entities=[entity], out=str(cfg.path(cfg.model.bundle)),
                          progress=False)
    train_seconds = time.perf_counter() - started
    s = load_series(cfg, [entity])[0]
    run = replay_entity(evaluation_config(cfg, len(bundle.channels)), bundle, entity,
                        np.asarray(s.test, dtype=np.float32))
    log.info("done dataset=%s model=%s entity=%s train_s=%.1f score_s=%.1f", dataset, model, entity,
             train_seconds, run.seconds)
    return str(cfg.path(cfg.model.bundle)), train_seconds, run


def run_cell(args, dataset: str, model: str, entities: list[str], work: Path) -> Cell:
    """Train one bundle per entity, backtest each, and aggregate them into one report. With --jobs N the entities
    run in N spawned processes (spawn, not fork: CUDA and torch's thread pools do not survive a fork)."""
    cell = Cell(dataset, model, entities, args.epochs, args.preset or "default")
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(train_and_replay, *zip(*[(args, dataset, model, e, work) for e in entities])))
    else:
        results = [train_and_replay(args, dataset, model, e, work) for e in entities]
    cfg = dataset_config(args, dataset, model, entities[0], Path(results[0][0]))
    series = [load_series(cfg, [e])[0] for e in entities]
    cell.train_seconds = sum(r[1] for r in results)
    cell.score_seconds = sum(r[2].seconds for r in results)
    cell.report = build_report(cfg, load_bundle(results[0][0]), series, [r[2] for r in results])
    return cell


def entity_names(args, dataset: str) -> list[str]:
    cfg = load_config(args.config, [f"data.dataset={dataset}"])
    names = [line.split(",")[0] for line in (cfg.path(cfg.data.root) / dataset / "entities.csv").read_text()
             .splitlines()[1:] if line.strip()]
    return names[:args.entities_limit] if args.entities_limit else names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "config" / "smd.yaml"), help="base config (data root, thresholds)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--models", default="all", help="comma-separated registry names, 'all' or 'baselines'")
    p.add_argument("--entities-limit", type=int, default=0, help="first N entities of each dataset (0 = all)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--preset", default=None, help="model preset (default: each model's default)")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--max-windows", type=int, default=20000, help="cap on training windows per entity")
    p.add_argument("--quick", action="store_true", help="tiny presets, 1 epoch, 2 entities: a smoke run")
    p.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="entities trained in parallel processes (one torch thread "
                   "each); times in the table are summed over entities either way")
    p.add_argument("--work", default=str(ROOT / "artifacts" / "benchmark"), help="bundles and raw results")
    p.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"), help="markdown table to write")
    p.add_argument("--merge", action="store_true", help="keep cells of earlier runs from WORK/cells.json")
    p.add_argument("--combine", default="", help="comma-separated WORK folders of earlier (parallel) runs: write "
                   "RESULTS from their cells.json files and run nothing")
    p.add_argument("--note", action="append", default=[], help="a line for the 'How this table was made' section")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.preset, args.entities_limit, args.max_windows = 1, "tiny", args.entities_limit or 2, 2000
    return args


def model_names(spec: str) -> list[str]:
    known = registry.names()
    if spec == "all":
        return known
    if spec == "baselines":
        return [m for m in BASELINES if m in known]
    return [m.strip() for m in spec.split(",") if m.strip()]


COLUMNS = [("macro", "vus_pr", "VUS-PR"), ("macro", "auc_pr", "AUC-PR"), ("macro", "alert.event_f1", "event-F1"),
           ("micro", "alert.point_f1", "point-F1"), ("macro", "alert.detection_delay", "delay"),
           ("macro", "alert.false_alerts_per_1k", "false/1k"),
           ("macro", "alert.pa_f1_paper_only", "PA-F1 (papers only)")]

PUBLISHED = """## Published figures (other protocols: read before comparing)

| method | dataset | figure | metric and protocol | source |
|---|---|---|---|---|
| PCA | TSB-AD-M, SMD series | 0.364 | VUS-PR, TSB-AD's own SMD series, per-series training, its sliding-window choice | TSB-AD, NeurIPS 2024 |
| TranAD | TSB-AD-M, SMD series | 0.301 | VUS-PR, same protocol | TSB-AD, NeurIPS 2024 |
| USAD | TSB-AD-M, SMD series | 0.160 | VUS-PR, same protocol | TSB-AD, NeurIPS 2024 |
| Anomaly Transformer | TSB-AD-M, SMD series | 0.067 | VUS-PR, same protocol | TSB-AD, NeurIPS 2024 |
| best entry on the scoreboard | NAB v1.1, 58 files | 74.9 | NAB score, standard profile, threshold tuned on the corpus | NAB scoreboard |
| HTM (Numenta) | NAB v1.1, 58 files | 70.5 | NAB score, standard profile, threshold tuned on the corpus | NAB scoreboard |

Our SMD has 19 of the 28 machines (the 9 longest are missing), our thresholds come from training data only (NAB's
scoreboard tunes them on the scored corpus), and our scores come from the live pipeline with a scoring stride, so
the published figures are anchors, not like-for-like comparisons.
"""


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _row(cell: dict) -> str:
    agg = cell["report"].get("aggregate", {}) if cell.get("report") else {}
    values = [agg.get(scope, {}).get(key) for scope, key, _ in COLUMNS]
    nab = agg.get("nab", {}).get("nab_standard")
    n = len(cell["entities"])
    who = ", ".join(cell["entities"]) if n <= 3 else f"{n}: {cell['entities'][0]} .. {cell['entities'][-1]}"
    trained = "fitted, no epochs" if cell["model"] in BASELINES else f"{cell['epochs']} ({cell['preset']})"
    cells = [cell["dataset"], cell["model"], who, trained] + values + [nab]
    cells += [f"{cell['train_seconds']:.0f}", f"{cell['score_seconds']:.0f}"]
    if cell.get("error"):
        cells[4] = f"failed: {cell['error'][:80]}"
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


NAB_BEST = 74.9  # NAB scoreboard, standard profile (thresholds tuned on the corpus)
VERDICT_METRICS = [("macro", "vus_pr", "VUS-PR"), ("macro", "alert.event_f1", "event-F1"),
                   ("micro", "alert.point_f1", "point-F1")]


def _metric(cell: dict, scope: str, key: str):
    v = cell["report"].get("aggregate", {}).get(scope, {}).get(key) if cell.get("report") else None
    return v if isinstance(v, float) and np.isfinite(v) else None


def _label(cell: dict) -> str:
    """The model's name, with its preset when not the default (two presets of one model are two candidates)."""
    return cell["model"] if cell.get("preset", "default") == "default" else f"{cell['model']} ({cell['preset']})"


def _beats_on_all(cells: list[dict]) -> list[str]:
    """Deep models that beat the best baseline on every headline metric at once."""
    winners = None
    for scope, key, _ in VERDICT_METRICS:
        base = [_metric(c, scope, key) for c in cells if c["model"] in BASELINES and _metric(c, scope, key) is not None]
        if not base:
            return []
        above = {_label(c) for c in cells if c["model"] not in BASELINES
                 and (_metric(c, scope, key) or float("-inf")) > max(base)}
        winners = above if winners is None else winners & above
    return sorted(winners or [])


def _per_entity(cell: dict, key: str) -> dict[str, float]:
    return {e["entity"]: float(e[key]) for e in cell["report"]["entities"] if isinstance(e.get(key), (int, float))}


def _outcome(deep: dict, base: dict, scope: str, key: str) -> str:
    """Who wins, and for a macro metric whether the paired bootstrap over entities says the gap is more than noise."""
    won = _metric(deep, scope, key) > _metric(base, scope, key)
    word = "beats it" if won else "does NOT beat it"
    if scope != "macro":
        return f"**{word}** (pooled over points: no interval)"
    diff = paired_difference(_per_entity(deep, key), _per_entity(base, key))
    if diff is None:
        return f"**{word}** (too few entities for an interval)"
    if won and diff.verdict != "ahead":
        word = "ahead, but within noise"
    elif not won and diff.verdict != "behind":
        word = "does NOT beat it (within noise)"
    return (f"**{word}** (paired difference {diff.mean:+.3f}, 95 % interval [{diff.low:+.3f}, {diff.high:+.3f}] over "
            f"{diff.entities} entities)")


def _verdicts(cells: dict) -> list[str]:
    """Per dataset and headline metric: the best baseline, and whether the best deep model beats it."""
    lines = []
    for dataset in sorted({c["dataset"] for c in cells.values()}):
        ours = [c for c in cells.values() if c["dataset"] == dataset]
        parts = []
        for scope, key, title in VERDICT_METRICS:
            scored = [c for c in ours if _metric(c, scope, key) is not None]
            base = [c for c in scored if c["model"] in BASELINES]
            deep = [c for c in scored if c["model"] not in BASELINES]
            if not base or not deep:
                continue
            b = max(base, key=lambda c: _metric(c, scope, key))
            d = max(deep, key=lambda c: _metric(c, scope, key))
            parts.append(f"{title}: best deep {_label(d)} {_metric(d, scope, key):.3f} vs best baseline "
                         f"{_label(b)} {_metric(b, scope, key):.3f} -> {_outcome(d, b, scope, key)}")
        allround = _beats_on_all(ours)
        if parts:
            parts.append("one deep model beating the best baseline on all three: "
                         f"**{', '.join(allround) if allround else 'none'}**")
        nab = [(c["report"]["aggregate"].get("nab", {}).get("nab_standard"), _label(c)) for c in ours
               if c.get("report")]
        nab = [(v, m) for v, m in nab if isinstance(v, float) and np.isfinite(v)]
        if nab:
            value, model = max(nab)
            parts.append(f"NAB standard: our best {model} {value:.1f} vs the scoreboard's best {NAB_BEST} -> "
                         f"**{'beats it' if value > NAB_BEST else 'does NOT beat it'}**")
        if parts:
            lines.append(f"- **{dataset}**: " + "; ".join(parts) + ".")
    return lines


def write_results(cells: dict, path: Path, notes: list[str] = ()) -> None:
    head = ["dataset", "model", "entities", "epochs (preset)"] + [t for _, _, t in COLUMNS]
    head += ["NAB standard", "train s", "score s"]
    lines = ["# Results", "", "Written by `tools/benchmark.py` (see docs/evaluation.md for the protocol and every "
             "metric's definition). Macro = mean over entities, micro = pooled points; F1, delay and false alerts "
             "are at the operating threshold with alerts as predictions; PA-F1 is for comparison with papers only.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(c) for _, c in sorted(cells.items())]
    lines += ["", "## Do the deep models beat the best simple baseline measured in the same run?", "",
              "A macro metric counts as beaten only when the 95 % percentile-bootstrap interval of the per-entity "
              "difference (resampling entities, paired) lies above zero; otherwise the line says the gap is within "
              "noise. The all-three line compares point estimates.", ""]
    lines += _verdicts(cells)
    if notes:
        lines += ["", "## How this table was made", ""] + [f"- {n}" for n in notes]
    lines += ["", PUBLISHED]
    path.write_text("\n".join(lines) + "\n")


def load_cells(work: Path) -> dict:
    path = work / "cells.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_cells(work: Path, cells: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "cells.json").write_text(json.dumps(cells, indent=1, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args = parse_args(argv)
    work = Path(args.work)
    if args.combine:
        cells = {}
        for folder in args.combine.split(","):
            cells.update(load_cells(Path(folder)))
        write_results(cells, Path(args.results), args.note)
        return 0
    cells = load_cells(work) if args.merge else {}
    for dataset in args.datasets.split(","):
        entities = entity_names(args, dataset)
        for model in model_names(args.models):
            try:
                cell = run_cell(args, dataset, model, entities, work)
            except Exception as exc:  # one failing model must not lose the others' results
                log.exception("failed dataset=%s model=%s", dataset, model)
                cell = Cell(dataset, model, entities, args.epochs, args.preset or "default", error=repr(exc)[:300])
            cells[f"{dataset}/{model}"] = cell.__dict__
            save_cells(work, cells)
    write_results(cells, Path(args.results), args.note)
    print(json.dumps({k: v.get("error") or "ok" for k, v in cells.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
