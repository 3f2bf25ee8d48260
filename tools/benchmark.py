"""Train and backtest every model and baseline on SMD, ASD and NAB; write docs/RESULTS.md.

    .venv/bin/python tools/benchmark.py                      # everything (hours on a laptop CPU)
    .venv/bin/python tools/benchmark.py --quick              # tiny presets, 1 epoch, 2 entities per dataset
    .venv/bin/python tools/benchmark.py --datasets smd --models pca,knn --entities-limit 5 --epochs 3

Protocol (docs/evaluation.md): one bundle per entity, trained on that entity's train split (`streamdet train`),
then the entity's test split replayed through the live pipeline stages (`streamdet evaluate`); thresholds from the
bundle's calibration only. Rows in the table say exactly which entities and epochs were run. `--mode fleet` trains
ONE bundle on all the entities' train splits together (what `streamdet run` serves as a single `model.bundle`) and
replays every entity's test split with it; its cells are keyed .../fleet.
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
from streamdet.evaluate.refit import replay_with_refits, retrain_with  # noqa: E402
from streamdet.evaluate.report import build_report  # noqa: E402
from streamdet.evaluate.interp_target import INTERPRETED, interpretation_target  # noqa: E402
from streamdet.evaluate.verdicts import AUTO, BASELINES, cell_key, target_rows, verdict_lines  # noqa: E402
from streamdet.models import registry  # noqa: E402
from streamdet.train import train_bundle  # noqa: E402

log = logging.getLogger("benchmark")
DATASETS = ("smd", "asd", "nab")


@dataclass
class Cell:
    """One model x dataset result."""

    dataset: str
    model: str
    entities: list[str]
    epochs: int
    preset: str
    mode: str = "per-entity"
    train_seconds: float = 0.0
    score_seconds: float = 0.0
    report: dict = field(default_factory=dict)
    error: str = ""


def dataset_config(args, dataset: str, model: str, entity: str, out: Path, max_windows: int = 0):
    """The config of one training + backtest run (config/smd.yaml with the benchmark's overrides)."""
    overrides = [f"data.dataset={dataset}", f"data.entities=[{entity}]", f"model.name={model}",
                 f"train.epochs={args.epochs}", f"model.bundle={out}",
                 f"train.max_windows={max_windows or args.max_windows}", f"model.window={args.window}"]
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
    if args.refit_every:  # scheduled retraining, replayed (streamdet/evaluate/refit.py)
        run = replay_with_refits(evaluation_config(cfg, len(bundle.channels)), bundle, s, args.refit_every,
                                 args.refit_rows, retrain_with(cfg, model), work=str(work))
    else:
        run = replay_entity(evaluation_config(cfg, len(bundle.channels)), bundle, entity,
                            np.asarray(s.test, dtype=np.float32))
    log.info("done dataset=%s model=%s entity=%s train_s=%.1f score_s=%.1f", dataset, model, entity,
             train_seconds, run.seconds)
    return str(cfg.path(cfg.model.bundle)), train_seconds, run


def run_fleet_cell(args, dataset: str, model: str, entities: list[str], work: Path) -> Cell:
    """Fleet mode: one bundle trained on all entities' train splits, then each entity's test split replayed with
    it. The window cap is --max-windows per entity times the entities, so the fleet model sees as much data as the
    per-entity bundles together."""
    cell = Cell(dataset, model, entities, args.epochs, args.preset or "default", mode="fleet")
    cfg = dataset_config(args, dataset, model, entities[0], work / dataset / model / "fleet.pt",
                         max_windows=args.max_windows * len(entities))
    started = time.perf_counter()
    bundle = train_bundle(cfg, model_name=model, entities=entities, out=str(cfg.path(cfg.model.bundle)),
                          progress=False)
    cell.train_seconds = time.perf_counter() - started
    series = load_series(cfg, entities)
    runs = [replay_entity(evaluation_config(cfg, len(bundle.channels)), bundle, s.entity,
                          np.asarray(s.test, dtype=np.float32)) for s in series]
    cell.score_seconds = sum(r.seconds for r in runs)
    cell.report = build_report(cfg, bundle, series, runs)
    return cell


def run_cell(args, dataset: str, model: str, entities: list[str], work: Path) -> Cell:
    """Train one bundle per entity, backtest each, and aggregate them into one report. With --jobs N the entities
    run in N spawned processes (spawn, not fork: CUDA and torch's thread pools do not survive a fork)."""
    if args.mode == "fleet":
        return run_fleet_cell(args, dataset, model, entities, work)
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
    if args.refit_every:
        cell.report["refit"] = {"every": args.refit_every, "rows": args.refit_rows}
    return cell


def entity_names(args, dataset: str) -> list[str]:
    """The dataset's entities (entities.csv), read from the root the runs use: --set data.root=... included."""
    cfg = load_config(args.config, [f"data.dataset={dataset}"] + list(args.set))
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
    p.add_argument("--mode", choices=("per-entity", "fleet"), default="per-entity",
                   help="one bundle per entity, or one fleet bundle trained on all the entities (see above)")
    p.add_argument("--quick", action="store_true", help="tiny presets, 1 epoch, 2 entities: a smoke run")
    p.add_argument("--refit-every", type=int, default=0, metavar="N", help="per-entity mode: retrain each "
                   "entity's model after every N test rows and hot-swap it in (scheduled retraining, replayed)")
    p.add_argument("--refit-rows", type=int, default=0, metavar="M",
                   help="with --refit-every: train on the latest M rows (0 = as many as the train split)")
    p.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="entities trained in parallel processes (one torch thread "
                   "each); times in the table are summed over entities either way")
    p.add_argument("--work", default=str(ROOT / "artifacts" / "benchmark"), help="bundles and raw results")
    p.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"), help="markdown table to write")
    p.add_argument("--merge", action="store_true", help="keep cells of earlier runs from WORK/cells.json")
    p.add_argument("--combine", default="", help="comma-separated WORK folders of earlier (parallel) runs: write "
                   "RESULTS from their cells.json files and run nothing")
    p.add_argument("--note", action="append", default=[], help="a line for the 'How this table was made' section")
    p.add_argument("--section", action="append", default=[], help="a markdown file appended as its own section "
                   "before the published figures (repeatable): measurements that are not cells of one run, e.g. "
                   "docs/results/modes.md from tools/compare_runs.py")
    p.add_argument("--zoo-table", default="", metavar="FILE", help="with --combine: also rewrite the research "
                   "models' rows between FILE's zoo markers (docs/models.md)")
    p.add_argument("--notes-file", default="", help="more such lines, one per line (committed next to the cells, "
                   "so that --combine regenerates the table exactly)")
    args = p.parse_args(argv)
    if args.refit_every and args.mode == "fleet":
        p.error("--refit-every retrains each entity's own bundle: it needs --mode per-entity")
    if args.notes_file:
        args.note += [line for line in Path(args.notes_file).read_text().splitlines() if line.strip()]
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
           ("macro", "alert.pa_f1_paper_only", "PA-F1 (papers only)"),
           ("micro", "interp.hitrate@100", "HitRate@100 %"), ("micro", "interp.hitrate@150", "HitRate@150 %"),
           ("micro", "interp.ndcg@150", "NDCG@150 %"),
           ("nab", "nab_standard", "NAB standard (ours)"), ("nab", "nab_standard_optimised", "NAB standard (NAB's)"),
           ("nab", "nab_standard_onsets", "NAB standard (NAB's, onsets)"),
           ("nab", "nab_standard_adaptive", "NAB standard (NAB's, HTM likelihood)")]

ATTRIBUTION_AT = 1 + [t for _, _, t in COLUMNS].index("NDCG@150 %")  # the column naming the cell's train.attribution

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
    values.insert(ATTRIBUTION_AT, attribution_text(cell["report"]) if cell["dataset"] in INTERPRETED else None)
    n = len(cell["entities"])
    who = ", ".join(cell["entities"]) if n <= 3 else f"{n}: {cell['entities'][0]} .. {cell['entities'][-1]}"
    trained = "fitted, no epochs" if cell["model"] in BASELINES else f"{cell['epochs']} ({cell['preset']})"
    model = cell["model"] + (" (fleet bundle)" if cell.get("mode") == "fleet" else "")
    cells = [cell["dataset"], model, who, trained] + values + [operating_text(cell["report"])]
    cells += [f"{cell['train_seconds']:.0f}", f"{cell['score_seconds']:.0f}"]
    if cell.get("error"):
        cells[4] = f"failed: {cell['error'][:80]}"
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


def attribution_text(report: dict) -> str:
    """How the row's alerts ranked channels: train.attribution and, where an alert fires after more than one row
    over the threshold, which row it ranked (alerting.attribute_at; cells made before it existed ranked the
    firing row)."""
    method = report.get("attribution", "not recorded")
    alerting = report.get("alerting") or {}
    if alerting.get("min_consecutive", 1) <= 1:
        return method
    return f"{method}, {alerting.get('attribute_at', 'firing')} row"


def operating_text(report: dict) -> str:
    """The row's operating settings: min_consecutive/cooldown, POT risk, init level and resolve quantile where the
    report records them (cells made before 2026-12-03 record neither: init level 0.98, no resolve level)."""
    alerting, threshold = report.get("alerting") or {}, report.get("threshold") or {}
    if not alerting:
        return "not recorded"
    parts = [f"{alerting['min_consecutive']}/{alerting['cooldown']}", f"risk {threshold.get('risk', 0):g}"]
    if "init_level" in threshold:
        parts.append(f"init {threshold['init_level']:g}")
    if alerting.get("resolve_quantile"):
        parts.append(f"resolve {alerting['resolve_quantile']:g}")
    return ", ".join(parts)


def write_results(cells: dict, path: Path, notes: list[str] = (), sections: list[str] = ()) -> None:
    head = ["dataset", "model", "entities", "epochs (preset)"] + [t for _, _, t in COLUMNS]
    head.insert(4 + ATTRIBUTION_AT, "channels ranked by")
    head += ["operating (run/cooldown, risk)", "train s", "score s"]
    lines = ["# Results", "", "Written by `tools/benchmark.py` (see docs/evaluation.md for the protocol and every "
             "metric's definition). Macro = mean over entities, micro = pooled points; F1, delay and false alerts "
             "are at the operating threshold with alerts as predictions; PA-F1 is for comparison with papers only. "
             "Operating: alerting.min_consecutive/cooldown, threshold.risk, the init level and resolve quantile "
             "where recorded (init 0.98 and no resolve level where not shown; docs/evaluation.md, \"Operating "
             "settings\").",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(c) for _, c in sorted(cells.items())]
    lines += ["", "Interpretation (HitRate@P %, NDCG@P %): for every firing alert inside a labelled segment of SMD's and "
              "ASD's interpretation labels, the alert's channels ranked as the daemon sends them against the "
              "segment's true channels, pooled over alerts. NAB (ours): the detections our operating threshold and "
              "alert rules make; NAB (NAB's): NAB's own protocol, every row over one threshold per profile tuned "
              "on the scored corpus, as the scoreboard's figures are (optimistic by construction), on each file's "
              "calibrated likelihood (its tail probability under that file's own validation scores, log-scaled as "
              "HTM's; streamdet/evaluate/nab_calibrated.py); NAB (NAB's, onsets): the same likelihood kept only "
              "where it first rises above the previous window's maximum (one detection per episode); NAB (NAB's, HTM "
              "likelihood): HTM's anomaly likelihood over the same values (its moving average's tail under the "
              "file's recent history, repeated red values damped; streamdet/evaluate/nab_adaptive.py).",
              "", "## Does streamdet beat the best simple baseline measured in the same run?", "",
              "'Beats' only when the 95 % percentile-bootstrap interval of the paired difference (resampling "
              "entities; for point-F1 the difference of pooled F1 over the same draw) lies above zero. The headline "
              "is the declared `auto` row (its model is chosen on validation data with injected anomalies, "
              "docs/evaluation.md); the best fixed model is reported separately and is picked on the test set.", ""]
    lines += verdict_lines(cells)
    lines += ["", "## Targets of issue 18", ""] + target_rows(cells)
    tried = [n for n in notes if n.startswith("Targets not met")]  # said next to the table it explains
    lines += [line for n in tried for line in ("", n)]
    lines += ["", "## Interpretation target of issue 19", ""] + interpretation_target(cells)
    goal = [n for n in notes if n.startswith("Interpretation goal of issue 19")]
    lines += [line for n in goal for line in ("", n)]
    notes = [n for n in notes if n not in tried + goal]
    if notes:
        lines += ["", "## How this table was made", ""] + [f"- {n}" for n in notes]
    for section in sections:
        lines += ["", Path(section).read_text().rstrip("\n")]
    lines += ["", PUBLISHED]
    path.write_text("\n".join(lines) + "\n")


ZOO_BEGIN = "<!-- zoo table: written by tools/benchmark.py --zoo-table; edit the cells, not these rows -->"
ZOO_END = "<!-- end of zoo table -->"
ZOO_COLUMNS = [("macro", "vus_pr", "VUS-PR"), ("macro", "alert.event_f1", "event-F1"),
               ("micro", "alert.point_f1", "point-F1"), ("micro", "interp.hitrate@100", "HitRate@100 %"),
               ("micro", "interp.hitrate@150", "HitRate@150 %"), ("micro", "interp.ndcg@150", "NDCG@150 %")]


def zoo_table(cells: dict) -> list[str]:
    """docs/models.md's rows: each research model's per-entity cells on the interpreted datasets (SMD, ASD), the
    same figures as docs/RESULTS.md's rows, with the interpreted alerts each HitRate pools over."""
    head = ["model", "dataset (entities)"] + [t for _, _, t in ZOO_COLUMNS]
    head += ["interpreted alerts", "operating (run/cooldown, risk)", "train s", "score s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    zoo = [c for c in cells.values() if c["model"] not in BASELINES and c["model"] != AUTO
           and c["dataset"] in INTERPRETED and c.get("mode", "per-entity") == "per-entity" and not c.get("error")]
    for cell in sorted(zoo, key=lambda c: (c["model"], c["dataset"])):
        agg = cell["report"]["aggregate"]
        values = [agg.get(scope, {}).get(key) for scope, key, _ in ZOO_COLUMNS]
        alerts = agg.get("micro", {}).get("interp.interpreted_alerts")
        row = [cell["model"], f"{cell['dataset']} ({len(cell['entities'])})"] + [_fmt(v) for v in values]
        row += [str(int(alerts or 0)), operating_text(cell["report"]), f"{cell['train_seconds']:.0f}",
                f"{cell['score_seconds']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_zoo_table(cells: dict, path: Path) -> None:
    """Replace the rows between the zoo markers of `path` (docs/models.md) with zoo_table(cells)."""
    text = path.read_text()
    if ZOO_BEGIN not in text or ZOO_END not in text:
        raise SystemExit(f"{path}: no zoo table markers ({ZOO_BEGIN!r} ... {ZOO_END!r}) to write between")
    before, rest = text.split(ZOO_BEGIN, 1)
    after = rest.split(ZOO_END, 1)[1]
    path.write_text(before + "\n".join([ZOO_BEGIN, *zoo_table(cells), ZOO_END]) + after)


def load_cells(work: Path) -> dict:
    """A run's cells keyed dataset/model/preset (older files keyed dataset/model are re-keyed)."""
    path = work / "cells.json"
    cells = json.loads(path.read_text()) if path.exists() else {}
    return {cell_key(c): c for c in cells.values()}


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
        write_results(cells, Path(args.results), args.note, args.section)
        if args.zoo_table:
            write_zoo_table(cells, Path(args.zoo_table))
        return 0
    cells = load_cells(work) if args.merge else {}
    for dataset in args.datasets.split(","):
        entities = entity_names(args, dataset)
        for model in model_names(args.models):
            try:
                cell = run_cell(args, dataset, model, entities, work)
            except Exception as exc:  # one failing model must not lose the others' results
                log.exception("failed dataset=%s model=%s", dataset, model)
                cell = Cell(dataset, model, entities, args.epochs, args.preset or "default", args.mode,
                            error=repr(exc)[:300])
            cells[cell_key(cell.__dict__)] = cell.__dict__
            save_cells(work, cells)
    write_results(cells, Path(args.results), args.note, args.section)
    print(json.dumps({k: v.get("error") or "ok" for k, v in cells.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
