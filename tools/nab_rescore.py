"""Recompute the NAB aggregate of committed NAB cells from the bundles their run stored, without retraining.

    nice -n 19 .venv/bin/python tools/nab_rescore.py --work WORK --cells docs/results/nab58/cells.json \\
        --window 32 --set data.root=/work/shared/data [--models knn,robust_z]

WORK is the benchmark's --work folder of the run that wrote the cells (its WORK/nab/MODEL/*.pt bundles). Each
cell's entities are replayed through the live pipeline with those bundles (tools/benchmark.py's replay), and the
cell's report["aggregate"]["nab"] is rebuilt by the current report code (e.g. a new NAB's-protocol input). The run
must be the same: the rescore refuses to write unless our-protocol NAB score (which depends on the replay only)
reproduces the stored one exactly. Other metrics and the cell's timings are kept.
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
from streamdet.evaluate.nab_score import corpus_score, load_windows  # noqa: E402
from streamdet.evaluate.report import nab_protocol_scores  # noqa: E402

log = logging.getLogger("nab_rescore")


def replay_cell(args, cell: dict, work: Path) -> list:
    """The cell's runs again, from its stored bundles (one per entity)."""
    runs = []
    for entity in cell["entities"]:
        path = work / "nab" / cell["model"] / f"{entity.replace('/', '__')}.pt"
        cfg = benchmark.dataset_config(args, "nab", cell["model"], entity, path)
        bundle = load_bundle(str(path))
        series = load_series(cfg, [entity])[0]
        runs.append(replay_entity(evaluation_config(cfg, len(bundle.channels)), bundle, entity,
                                  np.asarray(series.test, dtype=np.float32)))
    return runs


def _same(a: float, b: float) -> bool:
    """Equal to 1e-12, or both NaN (files without windows have no normalised score)."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def rescored_nab(cell: dict, runs: list, data_root: Path) -> dict:
    """The cell's new NAB aggregate; raises if the replay does not reproduce the stored our-protocol score."""
    windows = load_windows(data_root / "nab", [r.entity for r in runs])
    nab = corpus_score({r.entity: r.firing_rows() for r in runs}, windows)
    stored = cell["report"]["aggregate"]["nab"]
    for key, value in nab.items():
        if not _same(value, stored[key]):
            raise SystemExit(f"{cell['model']}: replay gives {key} {value}, the cell has {stored[key]}: not the "
                             "same run (other bundles or settings); rerun tools/benchmark.py instead")
    nab.update(nab_protocol_scores(runs, windows))
    return nab


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="the benchmark --work folder holding nab/MODEL/*.pt")
    p.add_argument("--cells", required=True, help="cells.json to update in place")
    p.add_argument("--models", default="", help="only these cells' models (comma-separated)")
    args, rest = p.parse_known_args(argv)
    bench = benchmark.parse_args(["--datasets", "nab"] + rest)  # --window, --set ... as the original run had
    torch.set_num_threads(1)
    cells = json.loads(Path(args.cells).read_text())
    wanted = {m for m in args.models.split(",") if m}
    for key, cell in cells.items():
        if cell["dataset"] != "nab" or (wanted and cell["model"] not in wanted):
            continue
        runs = replay_cell(bench, cell, Path(args.work))
        cfg = benchmark.dataset_config(bench, "nab", cell["model"], cell["entities"][0], Path(args.work))
        cell["report"]["aggregate"]["nab"] = rescored_nab(cell, runs, cfg.path(cfg.data.root))
        Path(args.cells).write_text(json.dumps(cells, indent=1, default=benchmark._jsonable))
        print(key, {k: round(float(v), 3) for k, v in cell["report"]["aggregate"]["nab"].items()
                    if k.startswith("nab_standard") and not k.endswith("threshold")})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
