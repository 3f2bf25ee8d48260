"""Choose how alerts rank channels (train.attribution) on validation data only: anomalies injected into the
validation tails know which channels they touched.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python tools/choose_attribution.py --dataset smd --entities 3 \
        --models sar,pca --set train.epochs=2 --set train.max_windows=1000

For each entity and model: the model is trained on the entity's training head (as tools/benchmark.py does), and
every method of train/attribution.py ranks the channels at the first alerted row of each injected segment
(train/attribution.injected_interpretation_at: with --at onset,firing and alerting.min_consecutive k, at the first
row of the first run of k over-threshold rows in each segment and at its k-th row, where the daemon's alert fires;
alerting.attribute_at). Prints HitRate@100 %, HitRate@150 % and NDCG@150 % per model and
method, pooled over the alerted injected segments. No test split is read. With --fleet, one model is trained on all
the entities at once (a fleet bundle, `streamdet train` without --per-entity) and ranked on all their tails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from choose_operating import validation_setup  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.train.attribution import INJECTED_COPIES, METHODS, injected_interpretation_at  # noqa: E402
from streamdet.train.core import train_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="smd")
    p.add_argument("--entities", type=int, default=3)
    p.add_argument("--models", default="sar,pca")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--copies", type=int, default=INJECTED_COPIES, help="injected versions of each validation tail")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--fleet", action="store_true", help="one model for all the entities (a fleet bundle)")
    p.add_argument("--at", default="onset", help="rows ranked: onset, firing or both (onset,firing)")
    args = p.parse_args(argv)
    cfg, names = validation_setup(args)
    methods = args.methods.split(",")
    ats = args.at.split(",")
    table: dict[tuple[str, str, str], list[tuple]] = {}
    for name in (["fleet"] if args.fleet else names):
        series = load_series(cfg, names if args.fleet else [name])
        for model in args.models.split(","):
            started = time.perf_counter()
            trained = train_model(cfg, series, model, progress=False)
            by_row = injected_interpretation_at(trained.served, trained.windows.val_tails, trained.window,
                                                cfg.scoring.stride, trained.context, cfg.threshold.init_level,
                                                cfg.train.seed, methods, args.copies, cfg.alerting.min_consecutive,
                                                ats)
            for at, scores in by_row.items():
                for m, s in scores.items():
                    table.setdefault((model, m, at), []).append(s)
            print(f"# {name} {model} {time.perf_counter() - started:.0f} s: " + ", ".join(
                f"{m} at {at} {s['hitrate@150']:.3f} ({s['interpreted_alerts']})" for at, scores in by_row.items()
                for m, s in scores.items()), file=sys.stderr, flush=True)
    print(f"| model | method | ranked at | HitRate@100 % | HitRate@150 % | NDCG@150 % | alerted segments |  ({args.dataset}, "
          f"{len(names)} entities{', one fleet model' if args.fleet else ''}, injected validation tails)")
    print("|---|---|---|---|---|---|---|")
    for (model, m, at), rows in table.items():
        n = sum(r["interpreted_alerts"] for r in rows)
        mean = {k: sum(r[k] * r["interpreted_alerts"] for r in rows if r["interpreted_alerts"]) / max(n, 1)
                for k in ("hitrate@100", "hitrate@150", "ndcg@150")}
        print(f"| {model} | {m} | {at} | {mean['hitrate@100']:.3f} | {mean['hitrate@150']:.3f} | {mean['ndcg@150']:.3f} "
              f"| {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
