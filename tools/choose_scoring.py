"""Choose the score-engineering defaults (model.score.*) on validation data only: auto's own protocol.

    nice -n 19 .venv/bin/python tools/choose_scoring.py --dataset asd --entities 6 --models knn,pca,autoencoder

For each entity and model: the model is trained on the entity's training head (as tools/benchmark.py does) and
each variant (plain, channel_norm, smooth, windows, standardise) is ranked exactly as `model.name: auto` ranks its
candidates (train/select.py: fitted without the last half of each validation tail, ranked by mean VUS-PR against
anomalies injected into that held-out half). Prints, per model
and variant, the mean validation VUS-PR over entities, on how many entities the variant beats plain, and the paired
bootstrap interval of its difference to plain. No test split is read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from choose_operating import validation_setup  # noqa: E402
from streamdet.data import load_series  # noqa: E402
from streamdet.errors import DataError  # noqa: E402
from streamdet.evaluate.metrics import paired_difference  # noqa: E402
from streamdet.train.candidates import parse_candidate  # noqa: E402
from streamdet.train.select import fit_candidate, make_injections, ranking_split, validation_score  # noqa: E402

VARIANTS = ("", "channel_norm=true", "smooth=10", "windows=[32]", "standardise=true")


def entity_rows(cfg, series: list, model: str, variants: list[str]) -> dict[str, float]:
    """Validation VUS-PR of every variant of one model trained on `series` (one entity, or a fleet)."""
    base_models: dict = {}
    fit_cfg, fit_series, tails = ranking_split(cfg, series)
    injections, out = make_injections(tails, cfg.train.seed, cfg.model.window), {}
    for variant in variants:
        candidate = parse_candidate(f"{model} {variant}".strip())
        trained = fit_candidate(fit_cfg, fit_series, candidate, base_models, progress=False)
        out[variant] = validation_score(trained, injections, cfg.scoring.stride)["vus_pr"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="asd")
    p.add_argument("--entities", type=int, default=6)
    p.add_argument("--models", default="knn,pca,autoencoder")
    p.add_argument("--variants", default="|".join(VARIANTS), help="'|'-separated candidate keys ('' = plain)")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--fleet", action="store_true", help="one model over all the entities (a fleet bundle)")
    args = p.parse_args(argv)
    cfg, names = validation_setup(args)
    variants = args.variants.split("|")
    table: dict[tuple[str, str], list[float]] = {}
    groups = [names] if args.fleet else [[name] for name in names]
    for group in groups:
        series, name = load_series(cfg, group), "fleet" if args.fleet else group[0]
        for model in args.models.split(","):
            started = time.perf_counter()
            try:
                values = entity_rows(cfg, series, model, variants)
            except DataError as exc:  # a short NAB file: no rows to hold out of the fitting
                print(f"# {name} skipped: {exc}", file=sys.stderr, flush=True)
                break
            for variant, value in values.items():
                table.setdefault((model, variant), []).append(value)
            print(f"# {name} {model} {time.perf_counter() - started:.0f} s: " +
                  ", ".join(f"{v or 'plain'} {x:.3f}" for v, x in values.items()), file=sys.stderr, flush=True)
    print(f"| model | variant | validation VUS-PR (mean) | beats plain on | difference [95 %] |  ({args.dataset}, "
          f"{len(names)} entities, injected validation tails)")
    print("|---|---|---|---|---|")
    for line in table_lines(table, variants[0]):
        print(line)
    return 0


def table_lines(table: dict[tuple[str, str], list[float]], plain_variant: str) -> list[str]:
    """One row per (model, variant): the mean, the entities where it beats plain, and the paired bootstrap interval
    of its difference to plain over entities (evaluate/metrics.py, as the results table's verdicts)."""
    lines = []
    for (model, variant), values in table.items():
        plain = table[(model, plain_variant)]
        wins = int((np.array(values) > np.array(plain) + 1e-9).sum())
        diff = paired_difference(dict(enumerate(values)), dict(enumerate(plain)))
        interval = "" if diff is None or variant == plain_variant else \
            f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
        lines.append(f"| {model} | {variant or 'plain'} | {np.nanmean(values):.3f} | {wins}/{len(values)} | {interval} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
