"""Input scaling (train/scaling.py) and the model context the stride must leave (pipeline/stride.effective_stride)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdet.config import load_config
from streamdet.errors import ConfigError
from streamdet.evaluate.backtest import evaluation_config, replay_entity
from streamdet.data import load_series
from streamdet.pipeline.stride import effective_stride
from streamdet.train import train_bundle
from streamdet.train.scaling import fit_scaling

from ..conftest import SMD_CONFIG


def mixed_units(rng, n=5000):
    """Real metric rows: bytes, a percentage, a count, a channel stuck at 0 and one stuck at 10^9."""
    return np.stack([1e9 + 5e7 * rng.standard_normal(n), 100 * rng.random(n), rng.poisson(3, n).astype(float),
                     np.zeros(n), np.full(n, 1e9)], axis=1)


def test_robust_scaling_puts_mixed_units_on_one_scale():
    rng = np.random.default_rng(0)
    rows = mixed_units(rng)
    offset, scale = fit_scaling([rows[:2500], rows[2500:]], "robust")
    z = (rows - offset) / scale
    central = np.quantile(z, 0.999, axis=0) - np.quantile(z, 0.001, axis=0)
    np.testing.assert_allclose(central[:3], 1.0, rtol=1e-3)  # bytes, percent and counts: one unit each
    np.testing.assert_allclose(np.median(z[:, :3], axis=0), 0.0, atol=1e-3)
    assert scale[3] == 1.0 and scale[4] == pytest.approx(1e7)  # constant channels: unit / 1 % of magnitude
    spike = rows[:1].copy()
    spike[0, 4] += 1e6  # a 0.1 % change of a channel constant in training stays small
    assert abs(float(((spike - offset) / scale)[0, 4])) <= 0.1


def test_global_z_score_inflates_a_quiet_channel_that_robust_does_not():
    """Why robust replaced global: a channel barely moving in training but spanning [0, 1] like its neighbours."""
    rng = np.random.default_rng(1)
    rows = np.stack([rng.random(4000), np.where(rng.random(4000) < 0.02, rng.random(4000), 0.5)], axis=1)
    _, z_scale = fit_scaling([rows], "global")
    _, r_scale = fit_scaling([rows], "robust")
    assert z_scale[1] < 0.2 * z_scale[0]  # the std of a mostly constant channel is small
    assert r_scale[1] > 0.5 * r_scale[0]  # its central range is not


def test_unknown_scaling_method_is_a_config_error():
    with pytest.raises(ConfigError, match="train.normalisation"):
        fit_scaling([np.zeros((10, 2))], "minmax")
    np.testing.assert_array_equal(fit_scaling([np.ones((10, 2))], "none")[1], [1.0, 1.0])


def test_effective_stride_leaves_the_context_inside_the_window():
    assert effective_stride(20, 100, 9) == 20
    assert effective_stride(20, 10, 9) == 1 and effective_stride(20, 16, 3) == 13 and effective_stride(20, 16) == 16


def test_knn_steps_are_scored_with_their_full_sub_window(tmp_path):
    """With window 12 and span 4 (context 3), every replayed score equals the model's score of that step computed
    from a window holding its three previous rows: no step is scored from edge-padded rows (the stride is capped at
    12 - 3 = 9, calibration included)."""
    cfg = load_config(SMD_CONFIG, ["data.dataset=synthetic", "data.synthetic_entities=1", "data.synthetic_length=1400",
                                   "data.synthetic_channels=3", "model.name=knn", "model.preset=tiny",
                                   "model.window=12", "scoring.stride=20", "train.device=cpu",
                                   f"model.bundle={tmp_path / 'k.pt'}"])
    bundle = train_bundle(cfg, progress=False)
    assert bundle.meta["config"]["context"] == 3
    series = load_series(cfg)[0]
    test = np.asarray(series.test[:300], dtype=np.float32)
    run = replay_entity(evaluation_config(cfg, 3), bundle, series.entity, test)
    rows = np.arange(bundle.window, len(test) - 20)
    with torch.inference_mode():
        windows = torch.from_numpy(np.stack([test[r - 11:r + 1] for r in rows]))  # [N, 12, 3], step r last
        expected = bundle.module(windows)[0][:, -1].numpy()
    np.testing.assert_allclose(run.scores[rows], expected, rtol=1e-4, atol=1e-5)


def test_scored_start_says_where_daemon_like_scores_begin_even_for_short_tails():
    """A model whose score is the row's own value: each score names the row it belongs to."""
    from streamdet.train.calibration import daemon_like_scores, scored_start

    class RowIndex(torch.nn.Module):
        def forward(self, x):
            return x[..., 0], x

    for n, window, stride in [(500, 32, 20), (45, 32, 20), (40, 32, 10), (33, 32, 20), (200, 10, 20)]:
        raw = np.arange(n, dtype=np.float32)[:, None]
        scores = daemon_like_scores(RowIndex(), raw, window, stride)
        start = scored_start(n, window, stride)
        np.testing.assert_array_equal(scores, np.arange(start, start + len(scores)))
