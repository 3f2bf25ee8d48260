"""train.refit: a fitted baseline calibrated on the validation tail, then served refitted on the whole train split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import streamdet.train.select as select
from streamdet.config import load_config
from streamdet.data import Series
from streamdet.errors import ConfigError
from streamdet.train import train_bundle
from streamdet.train.candidates import parse_candidate
from streamdet.train.core import export_trained
from streamdet.train.engineering import Ensemble, ensemble
from streamdet.train.splits import split_point

from ..conftest import SMD_CONFIG

ROWS, CHANNELS, SHIFT = 2000, 4, 6.0
TINY = ["model.preset=tiny", "model.window=24", "train.epochs=1", "train.device=cpu"]
KNN = ["model.name=knn", "model.params.references=512"]


def regime_change(entity: str, seed: int) -> Series:
    """A train split whose last fifth (the validation tail) is a new normal: every channel SHIFT higher. The test
    split stays in that new regime."""
    rng = np.random.default_rng(seed)
    t = np.arange(ROWS + 400)[:, None]
    values = np.sin(t / 15.0 + np.arange(CHANNELS)) + 0.1 * rng.standard_normal((len(t), CHANNELS))
    values[int(ROWS * 0.8):] += SHIFT
    values = values.astype(np.float32)
    return Series(entity, [f"c{i}" for i in range(CHANNELS)], values[:ROWS], values[ROWS:],
                  np.zeros(400, np.int8))


def fleet() -> list[Series]:
    return [regime_change("a", 0), regime_change("b", 1)]


def bundle(tmp_path, name: str, *overrides: str):
    cfg = load_config(SMD_CONFIG, TINY + [f"model.bundle={tmp_path / (name + '.pt')}", *overrides])
    return train_bundle(cfg, series=fleet(), progress=False)


def scores(b, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        s, _ = b.module(torch.from_numpy(rows[None]))
    return s[0].numpy()


def test_a_refitted_knn_knows_the_tail_but_keeps_the_calibration_the_tail_gave_it(tmp_path):
    plain = bundle(tmp_path, "plain", *KNN, "train.refit=false")
    refit = bundle(tmp_path, "refit", *KNN, "train.refit=true")
    assert refit.meta["training"]["refit_whole_split"] is True
    assert plain.meta["training"]["refit_whole_split"] is False
    # calibrated by the head-only model on rows it never saw: the same calibration as without the refit
    assert refit.meta["calibration"] == plain.meta["calibration"]
    new_normal = fleet()[0].test[:24]
    assert scores(refit, new_normal).mean() < 0.2 * scores(plain, new_normal).mean()
    old_normal = fleet()[0].train[:24]  # the head is still known to both
    assert scores(refit, old_normal).mean() < 2 * scores(plain, old_normal).mean() + 1e-3


def test_refit_leaves_a_deep_model_as_trained(tmp_path):
    plain = bundle(tmp_path, "ae", "model.name=autoencoder", "train.refit=false")
    refit = bundle(tmp_path, "ae_refit", "model.name=autoencoder", "train.refit=true")
    assert refit.meta["training"]["refit_whole_split"] is False
    rows = fleet()[1].test[:24]
    np.testing.assert_array_equal(scores(refit, rows), scores(plain, rows))


def test_auto_ranks_a_refit_candidate_refitted_without_the_ranking_rows(tmp_path, monkeypatch):
    """In the ranking the refit sees the head and the first half of the tail, never the rows it is ranked on; the
    chosen candidate's final refit sees the whole train split. Here the tail is a new normal, so only the refitted
    knn knows the rows the anomalies are injected into, and it ranks first."""
    seen = []
    real = select.refit_whole_split

    def spy(trained, series, train_cfg):
        seen.append([len(s.train) for s in series])
        return real(trained, series, train_cfg)

    monkeypatch.setattr(select, "refit_whole_split", spy)
    b = bundle(tmp_path, "auto", *KNN, "model.name=auto", "model.auto_candidates=[knn, knn refit=true]",
               "model.auto_ensemble=0", "train.refit=false")
    selection = b.meta["training"]["selection"]
    assert [e["candidate"] for e in selection["ranking"]] == ["knn refit=true", "knn"]
    assert selection["ranking"][0]["vus_pr"] > selection["ranking"][1]["vus_pr"] + 0.1
    ranking_rows = selection["ranking_rows"]
    assert seen == [[ROWS - r for r in ranking_rows], [ROWS, ROWS]]  # one ranking fit, then the final one
    assert b.meta["training"]["refit_whole_split"] is True
    head = split_point(ROWS, 24, 0.2, "a")
    assert ROWS - ranking_rows[0] > head  # the refit in the ranking did see part of the tail


@pytest.mark.parametrize("value", ["3", "maybe"])
def test_a_refit_key_that_is_not_a_boolean_is_refused_naming_the_candidate(value):
    with pytest.raises(ConfigError, match=r"auto_candidates: 'knn refit=.*refit takes true or false"):
        load_config(SMD_CONFIG, ["model.name=auto", f"model.auto_candidates=[knn refit={value}]"])


def test_an_ensemble_of_refitted_members_calibrates_with_their_head_models_and_serves_the_refitted_ones(tmp_path):
    """auto's ensemble of refitted candidates: the head-only members calibrate (their knots and the threshold), the
    refitted members are what the bundle scores with. A refit carried over from the first member alone once made
    the 'ensemble' that member, unscaled."""
    cfg = load_config(SMD_CONFIG, TINY + KNN + [f"model.bundle={tmp_path / 'e.pt'}"])
    series = fleet()
    members = [select.fit_candidate(cfg, series, parse_candidate(spec), {}, False) for spec in ("knn", "knn span=2")]
    assert all(m.refit is not None for m in members)
    mixed = ensemble(members, ["knn", "knn span=2"], cfg.scoring.stride)
    assert isinstance(mixed.model, Ensemble) and isinstance(mixed.refit, Ensemble)
    assert [m.model for m in mixed.refit.models] == [m.refit for m in members]
    assert [m.model for m in mixed.model.models] == [m.model for m in members]
    exported = export_trained(cfg, series, mixed, tmp_path / "e.pt", 0.0)
    head_only = ensemble([dataclasses.replace(m, refit=None) for m in members], ["knn", "knn span=2"],
                         cfg.scoring.stride)
    assert exported.meta["calibration"] == export_trained(cfg, series, head_only, tmp_path / "h.pt", 0.0).meta[
        "calibration"]
    rows = series[0].test[:24]
    with torch.inference_mode():
        served, _ = mixed.served(torch.from_numpy(rows[None]))
    np.testing.assert_allclose(scores(exported, rows), served[0].numpy(), rtol=1e-5, atol=1e-6)
