"""CI's small benchmark: one SMD machine, one epoch, one deep model and two baselines, real data end to end."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_benchmark_writes_results(benchmark_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark

    results = tmp_path / "RESULTS.md"
    code = benchmark.main(["--quick", "--datasets", "smd", "--models", "lstm_ae,pca,robust_z", "--entities-limit",
                           "1", "--work", str(tmp_path / "work"), "--results", str(results),
                           "--set", "train.max_windows=1500"])
    assert code == 0
    cells = benchmark.load_cells(tmp_path / "work")
    assert set(cells) == {"smd/lstm_ae/tiny", "smd/pca/tiny", "smd/robust_z/tiny"}
    for cell in cells.values():
        assert cell["error"] == "", cell["error"]
        assert cell["entities"] == ["machine-1-2"] and cell["epochs"] == 1
        entity = cell["report"]["entities"][0]
        assert entity["unscored_rows"] == 0 and entity["rows"] > 20000
        assert 0.0 <= cell["report"]["aggregate"]["macro"]["vus_pr"] <= 1.0
        assert cell["train_seconds"] > 0 and cell["score_seconds"] > 0
    text = results.read_text()
    assert "| smd | pca | machine-1-2 | fitted, no epochs |" in text
    assert "best baseline" in text and "TSB-AD" in text
