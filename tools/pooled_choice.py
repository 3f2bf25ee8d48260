"""Pool auto's per-entity validation rankings into one choice for every entity of a dataset.

    .venv/bin/python tools/pooled_choice.py --work WORK --dataset asd

auto ranks its candidates on each entity's own validation tail (a few thousand rows with injected anomalies), so
with per-entity bundles each entity's choice rests on little data. This reads the rankings that a
`tools/benchmark.py --models auto` run stored in its bundles (WORK/DATASET/auto/*.pt, meta training.selection),
averages each candidate's validation VUS-PR over the entities that scored it, and prints the pooled ranking and the
winner: the candidate a pooled protocol serves to every entity, chosen on validation data only. Run it per entity
with `tools/benchmark.py --models auto --set 'model.auto_candidates=[WINNER]'` (auto with that one candidate trains
it exactly as it trains a chosen candidate). docs/evaluation.md, `model.name: auto`, reports the result.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamdet.bundle import load_bundle  # noqa: E402


def rankings(folder: Path) -> dict[str, dict[str, float]]:
    """candidate -> {entity bundle: validation VUS-PR} from every auto bundle in `folder`."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    paths = sorted(folder.glob("*.pt"))
    if not paths:
        raise SystemExit(f"no auto bundles in {folder}: run tools/benchmark.py --models auto --work WORK first")
    for path in paths:
        selection = load_bundle(path).meta["training"].get("selection")
        if not selection:
            raise SystemExit(f"{path} was not trained by model.name auto (no training.selection in its metadata)")
        for entry in selection["ranking"]:
            if np.isfinite(entry.get("vus_pr", np.nan)):
                scores[entry["candidate"]][path.stem] = float(entry["vus_pr"])
    return scores


def pooled(scores: dict[str, dict[str, float]]) -> list[tuple[str, float, int]]:
    """(candidate, mean validation VUS-PR, entities) best first; only candidates every entity scored compete."""
    entities = max(len(v) for v in scores.values())
    rows = [(c, float(np.mean(list(v.values()))), len(v)) for c, v in scores.items()]
    return sorted((r for r in rows if r[2] == entities), key=lambda r: -r[1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a tools/benchmark.py --work folder of a --models auto run")
    p.add_argument("--dataset", required=True)
    args = p.parse_args(argv)
    ranking = pooled(rankings(Path(args.work) / args.dataset / "auto"))
    print("| candidate | mean validation VUS-PR | entities |\n|---|---|---|")
    for candidate, mean, n in ranking:
        print(f"| {candidate} | {mean:.3f} | {n} |")
    print(f"\npooled choice: {ranking[0][0]}\n  tools/benchmark.py --datasets {args.dataset} --models auto "
          f"--set 'model.auto_candidates=[{ranking[0][0]}]' ...")


if __name__ == "__main__":
    main()
