"""Compare two tools/benchmark.py runs of the same entities, metric by metric, with a paired bootstrap interval.

    .venv/bin/python tools/compare_runs.py "stride 1=/tmp/pe_s1" "stride 20=/tmp/pe_s20"
    .venv/bin/python tools/compare_runs.py "fleet=/tmp/fl#smd/lstm_ae/default/fleet" "per-entity=/tmp/pe"

Each side is LABEL=WORK[#CELL_KEY]: a benchmark --work folder and, when it holds more than one cell, the key of the
cell to use. Prints one markdown row per metric: a, b, a - b and its 95 % interval (resampling entities; for point-F1
the difference of pooled F1 over the same draw), as the verdicts in docs/RESULTS.md compute them. Why a separate
tool: two regimes (scoring.stride) or two deployable modes are two runs, not two models of one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from benchmark import load_cells  # noqa: E402
from streamdet.evaluate.verdicts import difference, metric  # noqa: E402

METRICS = [("macro", "vus_pr", "VUS-PR"), ("macro", "auc_pr", "AUC-PR"), ("macro", "alert.event_f1", "event-F1"),
           ("micro", "alert.point_f1", "point-F1"), ("macro", "alert.detection_delay", "delay (rows)"),
           ("macro", "alert.false_alerts_per_1k", "false alerts /1k rows")]


def pick_cell(spec: str) -> tuple[str, dict]:
    """LABEL=WORK[#KEY] -> (label, cell); a clear error when the folder has no such cell or several to choose from."""
    label, _, where = spec.partition("=")
    folder, _, key = where.partition("#")
    cells = load_cells(Path(folder))
    if key:
        if key not in cells:
            raise SystemExit(f"{spec}: no cell {key!r} in {folder}/cells.json (has {sorted(cells)})")
        return label, cells[key]
    if len(cells) != 1:
        raise SystemExit(f"{spec}: {folder}/cells.json holds {len(cells)} cells {sorted(cells)}; name one with #KEY")
    return label, next(iter(cells.values()))


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def comparison_rows(a_label: str, a: dict, b_label: str, b: dict) -> list[str]:
    rows = [f"| metric | {a_label} | {b_label} | difference, 95 % interval |", "|---|---|---|---|"]
    for scope, key, name in METRICS:
        diff = difference(a, b, scope, key)
        interval = "no interval (fewer than 3 entities)" if diff is None else (
            f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] over {diff.entities} entities")
        rows.append(f"| {name} | {_num(metric(a, scope, key))} | {_num(metric(b, scope, key))} | {interval} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="LABEL=WORK[#CELL_KEY]")
    p.add_argument("b", help="LABEL=WORK[#CELL_KEY]")
    args = p.parse_args(argv)
    (a_label, a), (b_label, b) = pick_cell(args.a), pick_cell(args.b)
    if set(a["entities"]) != set(b["entities"]):
        both = len(set(a["entities"]) & set(b["entities"]))
        print(f"note: the runs cover different entities; differences are over the {both} both ran")
    print("\n".join(comparison_rows(a_label, a, b_label, b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
