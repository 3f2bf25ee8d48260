"""tools/pooled_choice.py on bundles that model.name auto really trained: the pooled ranking is the mean of the
per-entity validation rankings stored in them, and only candidates every entity scored compete."""

from pathlib import Path

import pytest

from streamdet.config import load_config

ROOT = Path(__file__).resolve().parents[2]
AUTO = ["data.dataset=synthetic", "data.synthetic_entities=2", "data.synthetic_length=2000",
        "data.synthetic_channels=4", "model.name=auto", "model.window=24", "train.epochs=1", "train.device=cpu",
        "model.auto_candidates=[pca, robust_z, pca normalisation=none]"]


def test_the_pooled_choice_is_the_best_mean_of_the_stored_rankings(tmp_path, monkeypatch, capsys):
    from streamdet.bundle import load_bundle
    from streamdet.data import list_entities
    from streamdet.train import train_bundle

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import pooled_choice

    cfg = load_config(ROOT / "config" / "smd.yaml", AUTO)
    folder = tmp_path / "synthetic" / "auto"
    stored = {}
    for entity in list_entities(cfg):
        path = folder / f"{entity}.pt"
        train_bundle(cfg, entities=[entity], out=str(path), progress=False)
        selection = load_bundle(path).meta["training"]["selection"]
        stored[entity] = {e["candidate"]: e["vus_pr"] for e in selection["ranking"]}
    means = {c: sum(s[c] for s in stored.values()) / len(stored) for c in stored[next(iter(stored))]}
    ranking = pooled_choice.pooled(pooled_choice.rankings(folder))
    assert [r[0] for r in ranking] == sorted(means, key=lambda c: -means[c])
    assert [r[1] for r in ranking] == pytest.approx(sorted(means.values(), reverse=True))

    pooled_choice.main(["--work", str(tmp_path), "--dataset", "synthetic"])
    assert f"pooled choice: {ranking[0][0]}" in capsys.readouterr().out


def test_a_candidate_some_entity_could_not_score_does_not_compete(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import pooled_choice

    scores = {"a": {"e1": 0.9}, "b": {"e1": 0.5, "e2": 0.6}, "c": {"e1": 0.4, "e2": 0.4}}
    assert pooled_choice.pooled(scores) == [("b", 0.55, 2), ("c", 0.4, 2)]
