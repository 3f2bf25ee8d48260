"""The results table's verdicts: a win on a macro metric is claimed only when the paired bootstrap says so."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import benchmark

    return benchmark


def cell(model: str, per_entity: list[float]) -> dict:
    entities = [{"entity": f"e{i}", "vus_pr": v} for i, v in enumerate(per_entity)]
    mean = sum(per_entity) / len(per_entity)
    return {"dataset": "smd", "model": model, "preset": "default",
            "report": {"entities": entities, "aggregate": {"macro": {"vus_pr": mean}}}}


def test_a_consistent_gain_beats_the_baseline(benchmark):
    base = cell("pca", [0.30, 0.40, 0.50, 0.60, 0.70, 0.35])
    deep = cell("lstm_ae", [v + 0.05 for v in [0.30, 0.40, 0.50, 0.60, 0.70, 0.35]])
    assert benchmark._outcome(deep, base, "macro", "vus_pr").startswith("**beats it** (paired difference +0.050")


def test_a_higher_mean_from_one_lucky_entity_is_within_noise(benchmark):
    base = cell("pca", [0.50] * 6)
    deep = cell("lstm_ae", [0.95, 0.45, 0.45, 0.45, 0.45, 0.45])  # mean 0.525 > 0.5, five of six entities worse
    text = benchmark._outcome(deep, base, "macro", "vus_pr")
    assert text.startswith("**ahead, but within noise**") and "over 6 entities" in text
    assert benchmark._outcome(base, deep, "macro", "vus_pr").startswith("**does NOT beat it (within noise)**")


def test_verdict_section_states_the_rule(benchmark, tmp_path, monkeypatch):
    cells = {"smd/pca": cell("pca", [0.5] * 4), "smd/lstm_ae": cell("lstm_ae", [0.1] * 4)}
    out = tmp_path / "RESULTS.md"
    monkeypatch.setattr(benchmark, "_row", lambda c: f"| {c['model']} |")  # a table row needs full reports
    benchmark.write_results(cells, out)
    text = out.read_text()
    assert "95 % percentile-bootstrap interval" in text
    assert "VUS-PR: best deep lstm_ae 0.100 vs best baseline pca 0.500 -> **does NOT beat it**" in text
