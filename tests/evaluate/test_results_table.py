"""docs/RESULTS.md is what the committed cells regenerate: the combine command its notes name rebuilds it exactly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "docs" / "results" / "notes.txt"


def test_the_committed_table_regenerates_exactly_from_the_committed_cells(benchmark, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the notes list the cell folders relative to the repository
    (folders,) = re.findall(r"tools/benchmark\.py --combine (\S+) --results docs/RESULTS\.md", NOTES.read_text())
    assert all((ROOT / f / "cells.json").exists() for f in folders.split(",")), "every listed cell folder is committed"
    out = tmp_path / "RESULTS.md"
    assert benchmark.main(["--combine", folders, "--results", str(out), "--notes-file", str(NOTES),
                           "--section", "docs/results/modes.md"]) == 0
    assert out.read_text() == (ROOT / "docs" / "RESULTS.md").read_text()
