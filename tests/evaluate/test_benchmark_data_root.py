"""`tools/benchmark.py --set data.root=...` reads the entity list from that root, as training and replay do."""

from pathlib import Path

from tests.data.mini_layout import ENTITIES, write_layout

ROOT = Path(__file__).resolve().parents[2]


def test_entity_list_honours_the_data_root_override(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark

    write_layout(tmp_path / "data")
    monkeypatch.setenv("STREAMDET_DATA", str(tmp_path / "nowhere"))  # the config's default root holds nothing
    code = benchmark.main(["--datasets", "asd", "--models", "robust_z", "--window", "32", "--epochs", "1",
                           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "RESULTS.md"),
                           "--set", f"data.root={tmp_path / 'data'}"])
    assert code == 0
    cell = benchmark.load_cells(tmp_path / "work")["asd/robust_z/default"]
    assert cell["error"] == "" and cell["entities"] == [ENTITIES["asd"]]
    assert cell["report"]["entities"][0]["unscored_rows"] == 0
