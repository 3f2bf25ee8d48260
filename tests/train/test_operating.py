"""Operating settings judged through the daemon's threshold and alert stages on injected validation labels."""

from __future__ import annotations

import numpy as np

from streamdet.config import load_config
from streamdet.train.operating import alert_mask, apply_settings, judge, settings_grid
from streamdet.train.calibration import calibrate

from ..conftest import SMD_CONFIG


def validation_like(seed: int):
    """Clean scores, and an injected copy: sustained runs of high scores (labelled) and lone one-row blips (not)."""
    rng = np.random.default_rng(seed)
    clean = rng.exponential(1.0, 3000)
    scores, labels = rng.exponential(1.0, 3000), np.zeros(3000, np.int8)
    for start in (500, 1500, 2500):
        scores[start:start + 30] += 12.0
        labels[start:start + 30] = 1
    for blip in rng.choice(np.r_[100:450, 700:1400, 1700:2400], 25, replace=False):
        scores[blip] += 12.0  # isolated, unlabelled
    return clean, scores, labels


def test_alert_mask_follows_the_pipelines_alert_rules():
    cfg = load_config(SMD_CONFIG, ["alerting.min_consecutive=3", "alerting.cooldown=5", "threshold.update=false"])
    calibration = calibrate(np.random.default_rng(0).exponential(1.0, 2000), 0.98)
    scores = np.zeros(100)
    scores[[10, 20, 21]] = 50.0  # one and two over: no alert with min_consecutive 3
    scores[40:44] = 50.0  # four over: fires at the third, resolves after five under
    mask = alert_mask(cfg, calibration, scores)
    assert mask[:42].sum() == 0 and mask[42:48].all() and mask[48:].sum() == 0  # resolved at the 5th under (48)


def test_the_objective_prefers_streaks_when_noise_is_lone_blips():
    cfg = load_config(SMD_CONFIG, [])
    clean, scores, labels = validation_like(0)
    base = {"cooldown": 5, "risk": 1e-3, "init_level": 0.98}
    one = judge(cfg, [clean], [(scores, labels)], {"min_consecutive": 1, **base})
    three = judge(cfg, [clean], [(scores, labels)], {"min_consecutive": 3, **base})
    assert three["objective"] > one["objective"] and three["false_alerts_per_1k"] < one["false_alerts_per_1k"]


def test_grid_and_settings_reach_the_config_sections():
    grid = settings_grid()
    assert len(grid) == 3 * 4 * 5 * 5 * 3
    assert {"min_consecutive", "cooldown", "resolve_quantile", "risk", "init_level"} == set(grid[0])
    cfg = apply_settings(load_config(SMD_CONFIG, []), grid[-1])
    assert (cfg.alerting.min_consecutive, cfg.threshold.init_level) == (grid[-1]["min_consecutive"],
                                                                        grid[-1]["init_level"])


def test_a_resolve_quantile_holds_the_alert_through_an_elevated_stretch():
    """Scores that fire once, then sit between the clean scores' 90th percentile and the threshold: the alert
    covers the stretch with resolve_quantile 0.9, and resolves after the cooldown without it."""
    cfg = load_config(SMD_CONFIG, ["alerting.min_consecutive=1", "alerting.cooldown=5", "alerting.resolve_quantile=0",
                                   "threshold.risk=1e-3", "threshold.update=false"])
    clean = np.random.default_rng(0).exponential(1.0, 2000)
    calibration = calibrate(clean, 0.98)
    scores = np.full(200, 0.1)
    scores[50] = 50.0
    scores[51:120] = np.quantile(clean, 0.95)  # elevated, under the threshold (about the 98th percentile and up)
    plain = alert_mask(cfg, calibration, scores)
    held = alert_mask(apply_settings(cfg, {"min_consecutive": 1, "cooldown": 5, "resolve_quantile": 0.9,
                                           "risk": 1e-3, "init_level": 0.98}), calibration, scores)
    assert plain[50:55].all() and plain[55:].sum() == 0  # resolved at the 5th point under the threshold
    assert held[50:124].all() and held[124:].sum() == 0  # at the 5th point under the level
