"""`streamdet evaluate` end to end: a real bundle, the real pipeline stages, real report files."""

from pathlib import Path

import numpy as np
import pytest

from streamdet.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from streamdet.train import train_bundle

    tmp = tmp_path_factory.mktemp("backtest")
    cfg = load_config(ROOT / "config" / "smd.yaml", [
        "data.dataset=synthetic", "data.synthetic_entities=2", "data.synthetic_channels=4",
        "data.synthetic_length=4000", "model.name=pca", "model.window=32", "train.epochs=1",
        f"model.bundle={tmp / 'pca.pt'}", "scoring.stride=4", "scoring.max_batch=16"])
    bundle = train_bundle(cfg, model_name="pca", entities=None, out=str(tmp / "pca.pt"), progress=False)
    return cfg, bundle, tmp


def test_every_row_scored_and_files_written(trained):
    from streamdet.evaluate.run import run_evaluate

    cfg, bundle, tmp = trained
    report = run_evaluate(cfg, bundle.path, out_dir=tmp / "out")
    assert len(report["entities"]) == 2
    for entity in report["entities"]:
        assert entity["unscored_rows"] == 0 and entity["rows"] > 0
        assert 0.0 <= entity["vus_pr"] <= 1.0
    assert report["aggregate"]["micro"]["alert.event_recall"] > 0  # the synthetic faults are findable by PCA
    names = {p.name for p in (tmp / "out").iterdir()}
    entities = {e["entity"] for e in report["entities"]}
    per_entity = {f"{e}.png" for e in entities} | {f"{e}.window.png" for e in entities}
    assert {"report.json", "report.md", "roc_pr.png", "score_distributions.png"} | per_entity <= names
    assert "loss.png" not in names  # PCA is fitted by prepare(): no training history to draw


def test_replay_is_deterministic_and_alerts_fire_on_over_rows(trained):
    from streamdet.bundle import load_bundle
    from streamdet.data import load_series
    from streamdet.evaluate.backtest import evaluation_config, replay_entity

    cfg, bundle, _ = trained
    loaded = load_bundle(bundle.path)
    s = load_series(cfg)[0]
    rows = np.asarray(s.test, dtype=np.float32)
    eval_cfg = evaluation_config(cfg, len(loaded.channels))
    a = replay_entity(eval_cfg, loaded, s.entity, rows, chunk=97)
    b = replay_entity(eval_cfg, loaded, s.entity, rows, chunk=1000)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    np.testing.assert_allclose(a.thresholds, b.thresholds, rtol=1e-5)
    assert [x["row"] for x in a.alerts] == [x["row"] for x in b.alerts]
    firing = np.flatnonzero(a.firing_rows())
    assert firing.size and a.over[firing].all()  # an alert fires on an over-threshold row
    assert len(a.alerts[0]["top_channels"]) == len(loaded.channels)
