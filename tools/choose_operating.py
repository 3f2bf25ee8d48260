"""Choose the operating settings (min_consecutive, cooldown, resolve quantile, POT risk and init level) on
validation data only.

    nice -n 10 .venv/bin/python tools/choose_operating.py --dataset asd --entities 12 --models knn,autoencoder

For each entity and model: train on the entity's training head (as tools/benchmark.py does) without the last half of
its validation tail, refitted as `train.refit` asks; score the first half (the calibration) and injected copies of
the held-out second half (train/inject.py) as the daemon does (auto's protocol, train/select.py), then run every
setting of streamdet/train/operating.GRID through the daemon's threshold and alert stages (train/operating.py).
Prints the settings ranked by the mean objective over entities and models (mean of point-F1 and event-F1 of the
alerts against the injected labels). No test split is read.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamdet.config import load_config  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.train.candidates import parse_candidate  # noqa: E402
from streamdet.train.calibration import daemon_like_scores, scored_start  # noqa: E402
from streamdet.train.operating import judge, settings_grid  # noqa: E402
from streamdet.train.select import fit_candidate, make_injections, ranking_split  # noqa: E402


def entity_scores(cfg, series, model: str):
    """(clean validation scores per tail, [(injected scores, labels)]) of one model trained on one entity, as auto
    ranks candidates: fitted without the last half of the validation tail (refitted on the rest where
    `train.refit` asks), calibrated on the first half, judged on injected copies of the second."""
    fit_cfg, fit_series, held_out = ranking_split(cfg, [series])
    trained = fit_candidate(fit_cfg, fit_series, parse_candidate(model), {}, progress=False)
    stride = cfg.scoring.stride
    clean = [daemon_like_scores(trained.calibrating, t, trained.window, stride, trained.context)
             for t in trained.windows.val_tails]
    inj = make_injections(held_out, cfg.train.seed, trained.window)
    pairs = []
    for values, labels in zip(inj.values, inj.labels):
        s = daemon_like_scores(trained.served, values, trained.window, stride, trained.context)
        start = scored_start(len(values), trained.window, stride, trained.context)
        pairs.append((s, labels[start:start + len(s)]))
    return clean, pairs


def validation_setup(args):
    """(config, first --entities entity names) of a validation-only choice: the benchmark's training budget."""
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    cfg = load_config(str(ROOT / "config" / "smd.yaml"), [f"data.dataset={args.dataset}", "train.epochs=3",
                                                          "train.max_windows=5000"] + args.set)
    names = [line.split(",")[0] for line in (cfg.path(cfg.data.root) / args.dataset / "entities.csv").read_text()
             .splitlines()[1:] if line.strip()][:args.entities]
    return cfg, names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="asd")
    p.add_argument("--entities", type=int, default=12)
    p.add_argument("--models", default="knn,autoencoder")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args(argv)
    cfg, names = validation_setup(args)
    grid = settings_grid()
    totals = np.zeros((len(grid), 4))
    runs = 0
    for name in names:
        series = load_series(cfg, [name])[0]
        for model in args.models.split(","):
            started = time.perf_counter()
            clean, pairs = entity_scores(cfg, series, model)
            for i, setting in enumerate(grid):
                r = judge(cfg, clean, pairs, setting)
                totals[i] += [r["objective"], r["point_f1"], r["event_f1"], r["false_alerts_per_1k"]]
            runs += 1
            print(f"# {name} {model} {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    order = np.argsort(-totals[:, 0])
    print(f"| min_consecutive | cooldown | resolve_quantile | risk | init_level | objective | point-F1 | event-F1 | "
          f"false/1k |  "
          f"({args.dataset}, {len(names)} entities x {args.models}, injected validation tails)")
    print("|---|---|---|---|---|---|---|---|---|")
    for i in order[:args.top]:
        s, (o, pf, ef, fa) = grid[i], totals[i] / runs
        print(f"| {s['min_consecutive']} | {s['cooldown']} | {s['resolve_quantile']:g} | {s['risk']:g} | "
              f"{s['init_level']} | {o:.3f} | {pf:.3f} | {ef:.3f} | {fa:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
