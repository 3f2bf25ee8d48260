"""tools/scoring_gap.py: its offline baselines, written again from their definitions, score what the registered
models score when both see the same training rows (so a gap it measures is the pipeline's, not a second definition),
and `--cells` reads the pipeline's per-entity rows for exactly the entities compared."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.models import registry

ROOT = Path(__file__).resolve().parents[2]
C, T = 6, 401  # an odd row count: numpy's and torch's medians agree


@pytest.fixture()
def gap(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import scoring_gap

    return scoring_gap


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(T + 50, 2)).cumsum(axis=0) * 0.2
    x = latent @ rng.normal(size=(2, C)) + 0.05 * rng.normal(size=(T + 50, C))
    x[:, 2] *= 40.0  # channels on different scales
    return x[:T], x[T:]


def _model_scores(name: str, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    model = registry.build(name, C, len(test), "default")
    model.prepare(torch.from_numpy(train[None]).float())  # one training window holding every row
    with torch.no_grad():
        scores, _ = model(torch.from_numpy(test[None]).float())
    return scores[0].double().numpy()


def test_offline_robust_z_is_the_model(gap, rows):
    train, test = rows
    np.testing.assert_allclose(gap.robust_z_scores(train, test), _model_scores("robust_z", train, test), rtol=1e-4)


def test_offline_row_pca_is_the_model(gap, rows):
    train, test = rows
    offline = gap.pca_row_scores(train, test, cap=10) / C  # the model averages the squared residual over channels
    np.testing.assert_allclose(offline, _model_scores("pca", train, test), rtol=1e-3, atol=1e-6)


def test_pipeline_rows_cover_exactly_the_compared_entities(gap, tmp_path):
    def cell(dataset, model, mode, values):
        entities = [{"entity": name, "vus_pr": v, "auc_pr": v / 2} for name, v in values.items()]
        return {"dataset": dataset, "model": model, "mode": mode, "report": {"entities": entities}}

    cells = {"a": cell("asd", "knn", "per-entity", {"omi-1": 0.2, "omi-2": 0.4, "omi-3": 0.9}),
             "b": cell("asd", "pca", "fleet", {"omi-1": 0.1, "omi-2": 0.1}),
             "c": cell("smd", "knn", "per-entity", {"omi-1": 0.3, "omi-2": 0.3}),
             "d": cell("asd", "hst", "per-entity", {"omi-1": 0.5})}
    path = tmp_path / "run" / "cells.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cells))
    assert gap.pipeline_rows(path, "asd", ["omi-1", "omi-2"]) == ["| pipeline: knn (run) | 0.300 | 0.150 | |"]
