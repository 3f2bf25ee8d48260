"""tools/nab_rescore.py on real NAB files: it rebuilds a cell's NAB aggregate from the run's stored bundles, and refuses
to write when the replay is not the run that made the cell."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_rescore_rebuilds_the_nab_aggregate_and_refuses_another_run(benchmark_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark
    import nab_rescore

    work = tmp_path / "work"
    common = ["--window", "32", "--max-windows", "1000", "--set", f"data.root={benchmark_data}"]
    assert benchmark.main(["--datasets", "nab", "--models", "robust_z", "--entities-limit", "6", "--work", str(work),
                           "--results", str(tmp_path / "RESULTS.md")] + common) == 0
    cells_path = work / "cells.json"
    cells = json.loads(cells_path.read_text())
    nab = cells["nab/robust_z/default"]["report"]["aggregate"]["nab"]
    for key in ("nab_standard_optimised", "nab_standard_onsets", "nab_standard_relative"):
        del nab[key]  # as a cell written before these inputs existed
    cells_path.write_text(json.dumps(cells))

    nab_rescore.main(["--work", str(work), "--cells", str(cells_path)] + common)
    rebuilt = json.loads(cells_path.read_text())["nab/robust_z/default"]["report"]["aggregate"]["nab"]
    assert {"nab_standard_optimised", "nab_standard_onsets", "nab_standard_relative"} <= set(rebuilt)
    assert 0.0 <= rebuilt["nab_standard_onsets"] <= 100.0

    cells = json.loads(cells_path.read_text())
    cells["nab/robust_z/default"]["report"]["aggregate"]["nab"]["nab_standard"] += 1.0  # not this replay's score
    cells_path.write_text(json.dumps(cells))
    with pytest.raises(SystemExit, match="not the same run"):
        nab_rescore.main(["--work", str(work), "--cells", str(cells_path)] + common)
