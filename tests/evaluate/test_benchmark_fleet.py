"""tools/benchmark.py --mode fleet: ONE bundle trained on all the entities' train splits, each entity's test split
replayed with it, keyed apart from the per-entity cell; tools/compare_runs.py pairs it with a per-entity run."""

from pathlib import Path

from streamdet.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]
ENTITIES = ["machine-1-2", "machine-1-3"]


def test_fleet_mode_trains_one_bundle_on_all_entities(benchmark_data, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark
    import compare_runs

    work = tmp_path / "fleet"
    results = tmp_path / "RESULTS.md"
    code = benchmark.main(["--quick", "--mode", "fleet", "--datasets", "smd", "--models", "pca", "--entities-limit",
                           "2", "--max-windows", "800", "--work", str(work), "--results", str(results)])
    assert code == 0
    cells = benchmark.load_cells(work)
    assert set(cells) == {"smd/pca/tiny/fleet"}
    cell = cells["smd/pca/tiny/fleet"]
    assert cell["error"] == "" and cell["mode"] == "fleet" and cell["entities"] == ENTITIES
    bundles = sorted(p.name for p in (work / "smd" / "pca").glob("*.pt"))
    assert bundles == ["fleet.pt"]  # one bundle, no per-entity ones
    trained = load_bundle(work / "smd" / "pca" / "fleet.pt").meta["training"]
    assert trained["entities"] == ENTITIES
    assert [e["entity"] for e in cell["report"]["entities"]] == ENTITIES
    assert all(e["unscored_rows"] == 0 for e in cell["report"]["entities"])
    assert "| smd | pca (fleet bundle) |" in results.read_text()

    per_entity = tmp_path / "per_entity"
    assert benchmark.main(["--quick", "--datasets", "smd", "--models", "pca", "--entities-limit", "2",
                           "--max-windows", "800", "--work", str(per_entity), "--results", str(results)]) == 0
    assert set(benchmark.load_cells(per_entity)) == {"smd/pca/tiny"}
    capsys.readouterr()
    assert compare_runs.main([f"fleet={work}", f"per-entity={per_entity}"]) == 0
    table = capsys.readouterr().out
    assert "| metric | fleet | per-entity |" in table and "| VUS-PR |" in table and "| point-F1 |" in table

    section = tmp_path / "modes.md"
    section.write_text("## Deployable modes and load regimes\n\n" + table)
    combined = tmp_path / "COMBINED.md"
    assert benchmark.main(["--combine", f"{work},{per_entity}", "--results", str(combined),
                           "--section", str(section)]) == 0
    text = combined.read_text()
    assert "| smd | pca (fleet bundle) |" in text and "| smd | pca | machine-1-2, machine-1-3 |" in text
    assert text.index("## Deployable modes and load regimes") < text.index("## Published figures")
