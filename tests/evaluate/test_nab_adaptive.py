"""HTM's anomaly likelihood as a NAB's-protocol input: a lasting change of level reads as one peak, not as a run of
false positives, and the red-zone damping and the re-estimation are what make it so."""

import numpy as np
import streamdet.evaluate.nab_adaptive as adaptive
from streamdet.evaluate.backtest import EntityRun
from streamdet.evaluate.nab_calibrated import calibrated_likelihood
from streamdet.evaluate.report import nab_protocol_scores
from streamdet.train.calibration import calibrate

N = 4000
SHIFT = 1500  # the labelled change of level: every score after it stays high


def _level_shift():
    """Unit noise, then from SHIFT on a lasting level of 6 (the model never learnt it: its scores stay high)."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=N)
    scores[SHIFT:] += 6.0
    return scores, calibrate(rng.normal(size=300), 0.98)


def test_lasting_shift_peaks_once_then_fades():
    scores, calibration = _level_shift()
    fixed = calibrated_likelihood(scores, calibration)
    moving = adaptive.adaptive_likelihood(fixed, calibration)
    assert np.median(fixed[SHIFT + 500:]) > 0.8  # the fixed calibration keeps the whole plateau high
    onset = moving[SHIFT:SHIFT + 20].max()
    assert onset >= 0.5  # the shift is seen at once: a red tail probability (1e-5 or less)
    assert moving[:SHIFT].max() < onset  # above every row before it
    assert np.quantile(moving[SHIFT + 500:], 0.99) < 0.5 * onset  # and then it is the norm


def test_repeated_red_values_are_damped_to_yellow():
    history = np.full(200, 0.05) + 0.01 * np.random.default_rng(0).random(200)
    p = adaptive.htm_tail_probabilities(np.full(5, 1.0), history)
    assert p[0] <= adaptive.RED  # the first red row stays red
    assert np.all(p[1:] == adaptive.YELLOW)  # the ones that follow it are damped


def test_unscored_rows_stay_unscored_and_a_short_history_is_neutral():
    p = adaptive.htm_tail_probabilities(np.array([np.nan, 0.9, -np.inf]), np.zeros(10))
    assert np.isnan(p[0]) and np.isnan(p[2])
    assert p[1] == 0.5  # fewer than ESTIMATION_SAMPLES averages: no estimate yet


def _corpus():
    """'shift': a lasting change of level inside its window's start; 'drift': a lasting change with no label."""
    scores, calibration = _level_shift()
    rng = np.random.default_rng(4)
    drift = rng.normal(size=N)
    drift[800:] += 5.0
    run = lambda name, s, c: EntityRun(name, s, np.full(N, c["pot"]["init_threshold"]), np.zeros(N, np.int8),
                                       calibration=c, window=32)
    runs = [run("shift", scores, calibration), run("drift", drift, calibrate(rng.normal(size=300), 0.98))]
    return runs, {"shift": [(SHIFT, SHIFT + 199)], "drift": []}


def test_adaptive_input_scores_where_the_fixed_calibration_gives_the_null_detector():
    runs, windows = _corpus()
    out = nab_protocol_scores(runs, windows)
    assert out["nab_standard_optimised"] == 0.0  # the plateaus' rows outside the window outweigh the one catch
    assert out["nab_standard_adaptive"] > 50.0


def test_without_damping_the_plateau_is_a_run_of_false_positives(monkeypatch):
    monkeypatch.setattr(adaptive, "RED", 0.0)  # no value is ever damped
    runs, windows = _corpus()
    assert nab_protocol_scores(runs, windows)["nab_standard_adaptive"] == 0.0


def _late_plateau_probabilities() -> np.ndarray:
    scores, calibration = _level_shift()
    values = calibrated_likelihood(scores, calibration)
    history = calibrated_likelihood(np.asarray(calibration["sample"]), calibration)
    return adaptive.htm_tail_probabilities(values, history)[SHIFT + 1000:]


def test_reestimation_makes_a_lasting_level_the_norm(monkeypatch):
    assert np.median(_late_plateau_probabilities()) > 0.05  # the new level is ordinary again
    monkeypatch.setattr(adaptive, "REESTIMATE_EVERY", 10 ** 9)  # estimate once, never again
    assert np.all(_late_plateau_probabilities() == adaptive.YELLOW)  # red for ever, damped
