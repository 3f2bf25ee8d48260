"""The trainer and train_bundle: loss falls, early stopping keeps the best epoch, calibration sees validation only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.data import Series
from streamdet.models import registry
from streamdet.train import splits, train_bundle
from streamdet.evaluate.backtest import replay_entity
from streamdet.train.calibration import calibrate, daemon_like_scores, first_scored_row
from streamdet.train.trainer import fit

from .. import fixture_data
from ..conftest import SMD_CONFIG, TINY_CHANNELS, TINY_ENTITY, TINY_WINDOW, tiny_overrides

SYNTH = ["data.dataset=synthetic", "data.synthetic_entities=2", "data.synthetic_length=2400",
         "data.synthetic_channels=4", "model.name=lstm_ae", "model.preset=tiny", "model.window=16",
         "train.epochs=2", "train.max_windows=300", "train.train_stride=2", "train.device=cpu"]


def windows(n=256, L=16, C=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None] + rng.integers(0, 50, (n, 1, 1))
    return (np.sin(t / 3.0) + 0.05 * rng.standard_normal((n, L, C))).astype(np.float32)


def test_loss_falls_and_the_best_epoch_is_restored():
    torch.manual_seed(0)
    model = registry.build("lstm_ae", 3, 16, "tiny")
    cfg = load_config(SMD_CONFIG, ["train.epochs=5", "train.patience=10", "train.lr=0.01", "train.device=cpu"])
    result = fit(model, windows(128), windows(64, seed=1), cfg.train, progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_val_loss == min(losses) and result.best_epoch == int(np.argmin(losses))


def test_early_stopping_after_patience_epochs_without_improvement():
    model = registry.build("lstm_ae", 3, 16, "tiny")
    cfg = load_config(SMD_CONFIG, ["train.epochs=50", "train.patience=2", "train.lr=1e-7", "train.device=cpu"])
    result = fit(model, windows(64), windows(32, seed=1), cfg.train, progress=False)
    assert result.stopped_early and result.epochs < 50
    assert result.epochs - 1 - result.best_epoch == 2  # patience 2: stop at the second epoch without improvement


def test_untrainable_baselines_are_fitted_by_prepare_alone():
    model = registry.build("robust_z", 3, 16)
    cfg = load_config(SMD_CONFIG, ["train.epochs=50", "train.device=cpu"])
    train = windows(64) * 3.0 + 5.0
    result = fit(model, train, windows(32, seed=1), cfg.train, progress=False)
    assert (result.epochs, result.history) == (0, [])
    with torch.no_grad():
        typical, _ = model(torch.from_numpy(train[:8]))  # [B, L]
        shifted, _ = model(torch.from_numpy(train[:8] + 30.0))
    assert float(shifted.min()) > float(typical.max()), "prepare() must have learned the training centre and scale"


def test_train_labels_are_windowed_exactly_like_the_values():
    """Column 0 carries the label itself (no normalisation), so every label window must equal its value window."""
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.1).astype(np.int8)
    train = np.column_stack([labels, rng.random(500)]).astype(np.float32)
    s = Series("a", ["label", "noise"], train, train[:50], np.zeros(50, np.int8), train_labels=labels)
    w = splits.make_windows([s], 16, 3, 0.25, 40, "none")
    assert w.train_labels.shape == w.train.shape[:2] and len(w.train) == 40
    np.testing.assert_array_equal(w.train_labels, w.train[:, :, 0])
    np.testing.assert_array_equal(w.val_labels, w.val[:, :, 0])


def test_calibration_quantiles_and_pot_tail():
    scores = np.random.default_rng(0).exponential(1.0, 10_000)
    cal = calibrate(scores, init_level=0.98)
    t = cal["pot"]["init_threshold"]
    assert abs(t - np.log(50)) < 0.15  # exponential(1): the 98th percentile is ln(50)
    assert cal["pot"]["n_peaks"] == int((scores > t).sum()) and min(cal["pot"]["peaks"]) > 0
    assert len(cal["sample"]) == 2000 and cal["n"] == 10_000


def test_train_bundle_calibrates_on_the_validation_tail_only(tmp_path, monkeypatch):
    """Poison the test split with NaN: training, calibration and export must never read it."""
    cfg = load_config(SMD_CONFIG, SYNTH)
    from streamdet import train as train_module

    real = train_module.load_series

    def poisoned(cfg, entities=None):
        return [dataclasses.replace(s, test=np.full_like(s.test, np.nan)) for s in real(cfg, entities)]

    monkeypatch.setattr(train_module, "load_series", poisoned)
    bundle = train_bundle(cfg, out=str(tmp_path / "b.pt"), progress=False)
    cal = bundle.calibration
    assert np.isfinite(cal["sample"]).all() and cal["quantiles"]["0.5"] <= cal["quantiles"]["0.999"]
    expected = sum(len(s.train) - splits.split_point(len(s.train), 16, cfg.train.val_fraction, s.entity) - 16 + 1
                   for s in real(cfg))
    assert abs(cal["n"] - expected) <= 2 * cfg.scoring.stride  # last `stride` steps of windows every `stride`
    meta = load_bundle(tmp_path / "b.pt").meta
    assert meta["training"]["entities"] == ["synthetic-0", "synthetic-1"] and meta["training"]["epochs"] >= 1
    assert_calibration_scores_equal_the_daemons(cfg, bundle, real(cfg)[0])


def assert_calibration_scores_equal_the_daemons(cfg, bundle, series):
    """Replay the validation tail through the real Pipeline: every full-window score equals the calibration's."""
    tail = series.train[splits.split_point(len(series.train), bundle.window, cfg.train.val_fraction, series.entity):]
    ours = daemon_like_scores(bundle.module, tail, bundle.window, cfg.scoring.stride)
    run = replay_entity(cfg, bundle, series.entity, tail)
    start = first_scored_row(bundle.window, cfg.scoring.stride)
    assert len(ours) > 100
    np.testing.assert_allclose(ours, run.scores[start:start + len(ours)], rtol=1e-4, atol=1e-5)


def test_global_normalisation_is_recorded_and_floors_constant_channels():
    base = np.random.default_rng(0).random((400, 3)).astype(np.float32)
    base[:, 2] = 0.5  # constant in training
    s = Series("a", ["x", "y", "z"], base, base[:50], np.zeros(50, np.int8))
    w = splits.make_windows([s], 16, 4, 0.25, 0, "global")
    assert w.std[2] > 0 and np.isfinite(w.train).all()
    np.testing.assert_allclose(w.mean[:2], base[:300, :2].mean(axis=0), rtol=1e-5)


def test_train_bundle_on_the_fixture_entity_is_reproducible(tmp_path):
    """The synthetic fixture entity (tests/fixture_data.py) stands in for an SMD machine; the same config trains the
    same weights and calibration twice (the seed covers the initial weights)."""
    cfg = load_config(SMD_CONFIG, tiny_overrides(tmp_path / "b.pt") + ["train.epochs=1", "train.max_windows=500"])
    bundle = train_bundle(cfg, entities=[TINY_ENTITY], progress=False)
    assert bundle.path == tmp_path / "b.pt" and len(bundle.channels) == TINY_CHANNELS
    assert bundle.meta["training"]["train_windows"] == 500 and bundle.meta["training"]["entities"] == [TINY_ENTITY]
    val_rows = int(len(fixture_data.series().train) * cfg.train.val_fraction)
    assert val_rows - TINY_WINDOW < bundle.calibration["n"] <= val_rows
    assert np.isfinite(bundle.calibration["sample"]).all()
    # the stride and window the calibration scores were computed with (the daemon warns when it serves another)
    assert (bundle.calibration["stride"], bundle.calibration["window"]) == (min(cfg.scoring.stride, TINY_WINDOW),
                                                                            TINY_WINDOW)
    again = train_bundle(cfg, entities=[TINY_ENTITY], out=str(tmp_path / "again.pt"), progress=False)
    assert again.calibration == bundle.calibration
    for name, tensor in bundle.module.state_dict().items():
        assert torch.equal(tensor, again.module.state_dict()[name]), name


def test_too_short_train_split_is_a_clear_error():
    from streamdet.errors import DataError

    s = Series("short", ["x"], np.zeros((20, 1), np.float32), np.zeros((5, 1), np.float32), np.zeros(5, np.int8))
    with pytest.raises(DataError, match="short: train split of 20 rows is too short for window 16"):
        splits.make_windows([s], 16, 1, 0.2, 0, "global")


def test_a_validation_tail_shorter_than_the_daemon_alignment_still_calibrates():
    """NAB's shortest stream leaves 34 validation rows for window 32, stride 10: the aligned first window would
    need 40 rows, so calibration scores the one window it has instead of failing."""
    from streamdet.train.calibration import daemon_like_scores

    class Constant(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=-1), x.abs()

    scores = daemon_like_scores(Constant(), np.random.default_rng(0).random((34, 1), dtype=np.float32), 32, 10)
    assert scores.shape == (10,)
