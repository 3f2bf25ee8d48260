"""Calibrated likelihoods for NAB's protocol: files on different scales become comparable, and a constant
calibration (threshold 0) no longer puts its file above every other."""

import math

import numpy as np
import pytest

from streamdet.evaluate.backtest import EntityRun
from streamdet.evaluate.nab_calibrated import (calibrated_by_segment, calibrated_likelihood, episode_onsets,
                                               tail_probability)
from streamdet.evaluate.report import nab_protocol_scores
from streamdet.train.calibration import calibrate

N = 2000


def _run(entity: str, scores: np.ndarray, calibration: dict) -> EntityRun:
    thresholds = np.full(scores.size, calibration["pot"]["init_threshold"])
    return EntityRun(entity, scores, thresholds, (scores > thresholds).astype(np.int8), calibration=calibration,
                     window=32)


def _two_files():
    """'spiky': noise on a unit scale with a labelled jump to 8 at row 1000; 'flat': a constant calibration
    (threshold 0) and small positive scores everywhere, no anomaly."""
    rng = np.random.default_rng(0)
    spiky = rng.normal(size=N)
    spiky[1000:1011] = 8.0
    flat = 0.01 + 0.001 * rng.random(N)
    runs = [_run("spiky", spiky, calibrate(rng.normal(size=500), 0.98)),
            _run("flat", flat, calibrate(np.zeros(120), 0.98))]
    return runs, {"spiky": [(1000, 1099)], "flat": []}


def test_calibrated_input_finds_the_window_that_threshold_relative_input_loses():
    runs, windows = _two_files()
    out = nab_protocol_scores(runs, windows)
    assert out["nab_standard_relative"] == 0.0  # flat's rows (relative to threshold 0) rank above the jump: null wins
    assert out["nab_standard_optimised"] > 50.0  # one threshold over both files catches the jump, not flat's noise
    assert out["nab_standard_onsets"] > 50.0


def test_constant_calibration_gives_the_empirical_floor_not_certainty():
    calibration = calibrate(np.zeros(120), 0.98)
    p = tail_probability(np.array([0.0, 1e-6, 5.0, np.nan]), calibration)
    assert p[0] == pytest.approx(1.0)
    assert p[1] == pytest.approx(1 / 121) and p[2] == pytest.approx(1 / 121)  # above every calibration score
    assert math.isnan(p[3])
    values = calibrated_likelihood(np.array([5.0, np.nan]), calibration)
    assert 0.0 < values[0] < 0.25 and values[1] == -np.inf


def test_tail_beyond_the_calibration_is_extrapolated_and_monotone():
    calibration = calibrate(np.random.default_rng(1).normal(size=1000), 0.98)
    s = np.linspace(-6, 12, 300)
    p = tail_probability(s, calibration)
    assert np.all(np.diff(p) <= 0) and p[0] == pytest.approx(1.0)
    assert p[-1] < 1 / 1001  # past the largest calibration score the GPD tail goes below the empirical floor
    assert calibrated_likelihood(s, calibration)[-1] <= 1.0


def test_episode_onsets_keep_the_first_rise_of_each_episode():
    v = np.array([0.1, 0.5, 0.5, 0.6, 0.2, 0.2, 0.2, 0.3, 0.7, -np.inf])
    out = episode_onsets(v, window=3)
    assert out.tolist() == [0.1, 0.5, 0.0, 0.6, 0.0, 0.0, 0.0, 0.3, 0.7, -np.inf]


def test_each_segment_is_read_under_the_calibration_of_the_bundle_that_scored_it():
    """Scheduled retraining swaps in a bundle on another score scale: read under the first calibration, its ordinary
    scores would all sit at the top of the sweep."""
    rng = np.random.default_rng(2)
    errors = lambda n, scale: scale * np.abs(rng.normal(size=n))  # noqa: E731  (a model's errors, on its scale)
    first, second = calibrate(errors(500, 1.0), 0.98), calibrate(errors(500, 100.0), 0.98)
    scores = np.concatenate([errors(300, 1.0), errors(300, 100.0)])
    one = calibrated_likelihood(scores, first)
    by_segment = calibrated_by_segment(scores, first, [(300, second)])
    np.testing.assert_array_equal(by_segment[:300], one[:300])
    assert np.median(one[300:]) > 0.5  # ordinary scores of the new bundle, read on the old scale
    np.testing.assert_array_equal(by_segment[300:], calibrated_likelihood(scores[300:], second))
    assert np.median(by_segment[300:]) < 0.1
