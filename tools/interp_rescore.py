"""Recompute the interpretation columns of committed cells from the bundles their run stored, without retraining.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python tools/interp_rescore.py --work WORK \\
        --cells docs/results/smd3/cells.json --datasets smd --entities-limit 3 --epochs 3 --max-windows 5000 \\
        [--models auto] [--mode fleet] [--set train.attribution=tail]

WORK is the benchmark's --work folder of the run that wrote the cells (WORK/DATASET/MODEL/ENTITY.pt, or fleet.pt in
fleet mode); the other options are that run's tools/benchmark.py options. Alerts rank channels by the bundle's
attribution record (pipeline/attribution.py); a bundle trained before the record existed, or with another method
than `train.attribution`, gets the record its training would write now: fitted (train/attribution.py) on the
contributions of the same clean validation tails its calibration used (the train split's last val_fraction). The
test splits are replayed through the live pipeline and the cell's `interp.*` metrics (per entity, micro, macro) are
replaced; the scores and alerts do not read the record, so the tool refuses to write unless every other metric of
the replay equals the stored one (same bundles, same settings). Timings are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchmark  # noqa: E402
from streamdet.bundle import load_bundle  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.evaluate.backtest import evaluation_config, replay_entity  # noqa: E402
from streamdet.evaluate.report import build_report  # noqa: E402
from streamdet.train.attribution import clean_contributions, fit_record  # noqa: E402
from streamdet.train.splits import split_point  # noqa: E402

log = logging.getLogger("interp_rescore")
KEPT = ("scoring_seconds",)  # metrics a replay does not reproduce (wall time)


def bundle_paths(work: Path, cell: dict) -> list[Path]:
    """One stored bundle per entity, or the one fleet bundle."""
    folder = work / cell["dataset"] / cell["model"]
    if cell.get("mode") == "fleet":
        return [folder / "fleet.pt"]
    return [folder / f"{entity.replace('/', '__')}.pt" for entity in cell["entities"]]


def attribute(bundle, cfg, series: list) -> str:
    """Give `bundle` the attribution record of cfg.train.attribution, fitted on its clean validation tails (the
    train split's last val_fraction of each series it was trained on). Returns what it did."""
    method = cfg.train.attribution
    record = bundle.calibration.get("attribution")
    if record and record.get("method") == method:
        return "kept"
    val_fraction = float(bundle.meta["config"]["train"]["val_fraction"])
    tails = [s.train[split_point(len(s.train), bundle.window, val_fraction, s.entity):] for s in series]
    context = int(bundle.meta["config"].get("context", 0))
    tails = [np.asarray(t, dtype=np.float32) for t in tails]
    contrib = clean_contributions(bundle.module, tails, bundle.window, cfg.scoring.stride, context)
    bundle.calibration["attribution"] = fit_record(method, bundle.module, tails, bundle.window, cfg.scoring.stride,
                                                   context, contrib)
    return "fitted" if record is None else f"refitted (was {record.get('method')})"


def replayed_report(bench, cell: dict, work: Path) -> dict:
    """The cell's report again: its stored bundles, each given the current attribution, replayed on the test."""
    paths = bundle_paths(work, cell)
    cfg = benchmark.dataset_config(bench, cell["dataset"], cell["model"], cell["entities"][0], paths[0])
    series = [load_series(cfg, [e])[0] for e in cell["entities"]]
    bundles = [load_bundle(str(p)) for p in paths]
    fleet = cell.get("mode") == "fleet"
    for i, bundle in enumerate(bundles):
        done = attribute(bundle, cfg, series if fleet else [series[i]])
        log.warning("%s %s: attribution %s", cell["model"], paths[i].name, done)
    runs = [replay_entity(evaluation_config(cfg, len(bundles[0].channels)), bundles[0 if fleet else i], s.entity,
                          np.asarray(s.test, dtype=np.float32)) for i, s in enumerate(series)]
    report = build_report(cfg, bundles[0], series, runs)
    report["attribution"] = cfg.train.attribution
    return report


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        a, b = (math.nan if v is None else float(v) for v in (a, b))
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _differences(new: dict, stored: dict, where: str) -> list[str]:
    """Non-interpretation metrics of `new` that differ from `stored` (both flat metric dicts)."""
    return [f"{where} {k}: replay {new.get(k)!r}, cell {v!r}" for k, v in stored.items()
            if not k.startswith("interp.") and k not in KEPT and not isinstance(v, (dict, list))
            and not _same(new.get(k), v)]


def merge_interpretation(stored: dict, new: dict) -> None:
    """Copy new's interp.* metrics into `stored` (a cell's report), after checking the rest is the same run."""
    pairs = [(n, s, f"entity {s.get('entity')}") for n, s in zip(new["entities"], stored["entities"])]
    pairs += [(new["aggregate"][k], stored["aggregate"][k], k) for k in ("micro", "macro")]
    wrong = [d for n, s, where in pairs for d in _differences(n, s, where)]
    if len(new["entities"]) != len(stored["entities"]) or wrong:
        raise SystemExit("the replay is not the stored run (other bundles or settings); rerun tools/benchmark.py "
                         "instead:\n  " + "\n  ".join(wrong[:10]))
    for n, s, _ in pairs:
        s.update({k: v for k, v in n.items() if k.startswith("interp.")})
    stored["attribution"] = new["attribution"]
    stored.setdefault("alerting", {})["attribute_at"] = new["alerting"]["attribute_at"]  # which row they rank


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --mode is benchmark's, not an abbreviation of --models
    p.add_argument("--work", required=True, help="the benchmark --work folder holding DATASET/MODEL/*.pt")
    p.add_argument("--cells", required=True, help="cells.json to update in place")
    p.add_argument("--models", default="", help="only these cells' models (comma-separated)")
    args, rest = p.parse_known_args(argv)
    bench = benchmark.parse_args(rest)  # --datasets, --mode, --window, --set ... as the original run had
    torch.set_num_threads(1)
    cells = json.loads(Path(args.cells).read_text())
    wanted = {m for m in args.models.split(",") if m}
    for key, cell in cells.items():
        if (cell["dataset"] not in bench.datasets.split(",") or (wanted and cell["model"] not in wanted)
                or cell.get("mode", "per-entity") != bench.mode or cell.get("error")):
            continue
        merge_interpretation(cell["report"], replayed_report(bench, cell, Path(args.work)))
        Path(args.cells).write_text(json.dumps(cells, indent=1, default=benchmark._jsonable))
        micro = cell["report"]["aggregate"]["micro"]
        print(key, {k: round(float(micro[k]), 3) for k in ("interp.hitrate@100", "interp.hitrate@150",
                                                           "interp.ndcg@150", "interp.interpreted_alerts")},
              flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
