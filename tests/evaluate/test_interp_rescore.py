"""tools/interp_rescore.py on a real SMD machine: bundles stored by a run whose alerts ranked raw contributions get
the default attribution fitted on their own validation tails, and the rescored interpretation columns equal those of
a run trained with it; it refuses to write when the replay is not the run that made the cell."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "smd/pca/default"


def _interp(cell: dict) -> dict:
    report = cell["report"]
    flat = [report["aggregate"]["micro"], report["aggregate"]["macro"]] + report["entities"]
    return [{k: v for k, v in part.items() if k.startswith("interp.")} for part in flat]


def test_rescore_gives_the_interpretation_of_a_run_trained_with_the_attribution(benchmark_data, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark
    import interp_rescore

    common = ["--datasets", "smd", "--entities-limit", "1", "--max-windows", "1000", "--models", "pca",
              "--set", f"data.root={benchmark_data}"]
    for name, extra in (("raw", ["--set", "train.attribution=raw"]), ("default", [])):
        assert benchmark.main(common + extra + ["--work", str(tmp_path / name),
                                                "--results", str(tmp_path / f"{name}.md")]) == 0
    raw_path = tmp_path / "raw" / "cells.json"
    raw, trained = (json.loads((tmp_path / n / "cells.json").read_text())[KEY] for n in ("raw", "default"))
    assert trained["report"]["aggregate"]["micro"]["interp.interpreted_alerts"] >= 3
    assert _interp(raw) != _interp(trained)  # the two rankings differ on this machine

    interp_rescore.main(["--work", str(tmp_path / "raw"), "--cells", str(raw_path)] + common)
    rescored = json.loads(raw_path.read_text())[KEY]
    assert _interp(rescored) == _interp(trained)  # as if trained with the default attribution
    assert rescored["report"]["attribution"] == trained["report"]["attribution"] != "raw"
    assert rescored["report"]["aggregate"]["macro"]["vus_pr"] == raw["report"]["aggregate"]["macro"]["vus_pr"]

    cells = json.loads(raw_path.read_text())
    cells[KEY]["report"]["aggregate"]["micro"]["alert.point_f1"] += 0.01  # not this replay's detections
    raw_path.write_text(json.dumps(cells))
    with pytest.raises(SystemExit, match="not the stored run"):
        interp_rescore.main(["--work", str(tmp_path / "raw"), "--cells", str(raw_path)] + common)
