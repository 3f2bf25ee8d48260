"""knn_channel: every channel against its own references, each channel's distance scaled by its validation level.

Two channels: a loud one (unit noise) and a quiet one (noise 0.01). An anomaly on the quiet channel, large for it
and small against the loud one's normal noise, must outrank every clean step and name the quiet channel; that needs
both halves of the mechanism: channel-wise neighbours (a joint neighbour is decided by the loud channel) and the
validation scales fitted through the real trainer (unscaled, the loud channel's distances drown it).
"""

from __future__ import annotations

import numpy as np
import torch

from streamdet.config import load_config
from streamdet.models import registry
from streamdet.train.trainer import fit

from ..conftest import SMD_CONFIG

L, C = 24, 2
QUIET = 1


def _windows(n: int, seed: int) -> np.ndarray:
    """Windows [n, L, 2]: channel 0 unit noise, channel 1 a slow wave with noise 0.01."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 200, (n, 1))
    loud = rng.standard_normal((n, L))
    quiet = 0.2 * np.sin((start + np.arange(L)) / 6.0) + 0.01 * rng.standard_normal((n, L))
    return np.stack([loud, quiet], axis=-1).astype(np.float32)


def _fitted(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = registry.build(name, C, L, None, {"references": 1000})
    cfg = load_config(SMD_CONFIG, ["train.device=cpu"])
    fit(model, _windows(400, seed=0), _windows(200, seed=1), cfg.train, progress=False)
    return model.eval()


def _last_step_scores(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        score, contrib = model(torch.from_numpy(x))
    return score[:, -1].numpy(), contrib[:, -1].numpy()


def _clean_and_faulty() -> tuple[np.ndarray, np.ndarray]:
    clean = _windows(200, seed=2)
    faulty = _windows(20, seed=3)
    faulty[:, -3:, QUIET] += 0.15  # 15 of the quiet channel's noise; a sixth of the loud one's
    return clean, faulty


def test_the_trainer_fits_each_channels_scale_on_validation_windows():
    model = _fitted("knn_channel")
    scale = model.scale.numpy()
    assert scale[0] > 20 * scale[QUIET], scale  # the loud channel's usual distance dwarfs the quiet one's
    _, contrib = _last_step_scores(model, _windows(200, seed=4))
    assert np.all((contrib.mean(axis=0) > 0.5) & (contrib.mean(axis=0) < 2.0)), contrib.mean(axis=0)


def test_a_quiet_channels_anomaly_outranks_every_clean_step_and_is_named():
    model = _fitted("knn_channel")
    clean, faulty = _clean_and_faulty()
    clean_scores, _ = _last_step_scores(model, clean)
    faulty_scores, contrib = _last_step_scores(model, faulty)
    assert faulty_scores.min() > clean_scores.max(), (faulty_scores.min(), clean_scores.max())
    assert np.all(contrib.argmax(axis=1) == QUIET)


def test_without_its_scales_or_with_one_joint_neighbour_the_anomaly_is_lost():
    """The two halves of the mechanism, each removed: the same anomaly no longer outranks the clean steps."""
    clean, faulty = _clean_and_faulty()
    unscaled = _fitted("knn_channel")
    unscaled.scale.fill_(1.0)
    joint = _fitted("knn")
    for model in (unscaled, joint):
        clean_scores, _ = _last_step_scores(model, clean)
        faulty_scores, _ = _last_step_scores(model, faulty)
        assert faulty_scores.min() < clean_scores.max(), type(model).__name__
