"""docs/RESULTS.md is what the committed cells regenerate: the combine command its notes name rebuilds it exactly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "docs" / "results" / "notes.txt"


def combined_folders() -> str:
    """The cell folders the notes' combine command lists, comma-separated as tools/benchmark.py takes them."""
    (folders,) = re.findall(r"tools/benchmark\.py --combine (\S+) --results docs/RESULTS\.md", NOTES.read_text())
    return folders


def test_the_committed_table_regenerates_exactly_from_the_committed_cells(benchmark, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the notes list the cell folders relative to the repository
    folders = combined_folders()
    assert all((ROOT / f / "cells.json").exists() for f in folders.split(",")), "every listed cell folder is committed"
    out = tmp_path / "RESULTS.md"
    assert benchmark.main(["--combine", folders, "--results", str(out), "--notes-file", str(NOTES),
                           "--section", "docs/results/modes.md"]) == 0
    assert out.read_text() == (ROOT / "docs" / "RESULTS.md").read_text()


def test_the_models_page_zoo_table_regenerates_exactly_from_the_same_cells(benchmark, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    folders = combined_folders()
    page = tmp_path / "models.md"
    committed = (ROOT / "docs" / "models.md").read_text()
    page.write_text(committed)
    assert benchmark.main(["--combine", folders, "--results", str(tmp_path / "RESULTS.md"), "--notes-file",
                           str(NOTES), "--zoo-table", str(page)]) == 0
    assert page.read_text() == committed
    rows = committed.split(benchmark.ZOO_BEGIN)[1].split(benchmark.ZOO_END)[0].strip().splitlines()[2:]
    assert len(rows) == 20, "ten research models on SMD and ASD"
