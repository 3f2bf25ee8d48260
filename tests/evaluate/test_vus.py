"""Threshold-free metrics: hand-computed cases, then agreement with TSB-AD's reference implementation."""

import math

import numpy as np
import pytest

from streamdet.errors import StreamdetError
from streamdet.evaluate.vus import auc_pr, auc_roc, segments, soft_labels, vus


def test_segments_and_soft_borders():
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    assert segments(y).tolist() == [[0, 1], [5, 5]]
    soft = soft_labels(y, segments(y), 4)  # border of 2 points each side, sqrt(1 - d/4)
    assert soft[2] == pytest.approx(np.sqrt(0.75))
    assert soft[3] == 1.0  # two borders overlap: sqrt(0.5) + sqrt(0.5), clipped to 1
    assert soft[4] == pytest.approx(np.sqrt(0.75)) and soft[6] == pytest.approx(np.sqrt(0.75))
    assert soft[0] == soft[5] == 1.0


def test_auc_hand_cases():
    y = np.array([0, 0, 1, 1])
    assert auc_roc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    # ranking 1,0,1,0 (scores .9 .8 .7 .6): AP = 1/2*1 + 1/2*(2/3); ROC = 0.75
    y2, s2 = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])
    assert auc_pr(y2, s2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert auc_roc(y2, s2) == pytest.approx(0.75)
    assert math.isnan(auc_roc(np.zeros(4), s2))


def test_vus_of_perfect_ranking_is_one():
    y = np.zeros(300, int)
    y[100:110] = 1
    out = vus(y, y + 0.0, max_window=20)
    assert out["vus_pr"] == pytest.approx(1.0) and out["vus_roc"] == pytest.approx(1.0)


def test_vus_rewards_near_misses_more_than_far_ones():
    y = np.zeros(400, int)
    y[200:210] = 1
    near, far = np.zeros(400), np.zeros(400)
    near[212], far[350] = 1.0, 1.0
    assert vus(y, near, 20)["vus_pr"] > vus(y, far, 20)["vus_pr"]


def test_bad_input_is_named():
    with pytest.raises(StreamdetError, match="NaN"):
        vus(np.array([0, 1]), np.array([0.0, np.nan]))


tsb = pytest.importorskip("TSB_AD.evaluation.basic_metrics")


def _cases():
    rng = np.random.default_rng(7)
    for trial in range(8):
        n = int(rng.integers(300, 1500))
        y = np.zeros(n, int)
        for _ in range(int(rng.integers(1, 6))):
            a = int(rng.integers(0, n - 5))
            y[a:a + int(rng.integers(1, 50))] = 1
        if trial == 0:
            y[:7], y[-3:] = 1, 1  # segments touching both ends
        noise = rng.random(n)
        structured = noise + y * rng.random()
        scores = np.round(structured, 1) if trial % 2 else structured  # ties on odd trials
        yield y, scores, int(rng.integers(0, 60))
    y = np.zeros(600, int)
    y[300:340] = 1
    yield y, np.sin(np.arange(600) / 9.0) + (np.arange(600) > 320), 30  # structured: late, partial detection


@pytest.mark.parametrize("y,scores,window", list(_cases()))
def test_agrees_with_tsb_ad(y, scores, window):
    import warnings
    from sklearn import metrics as sk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_roc, ref_pr = tsb.generate_curve(y, scores, window)[-2:]
    ours = vus(y, scores, max_window=window)
    assert ours["vus_roc"] == pytest.approx(ref_roc, abs=1e-9)
    assert ours["vus_pr"] == pytest.approx(ref_pr, abs=1e-9)
    assert auc_roc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-12)
    assert auc_pr(y, scores) == pytest.approx(sk.average_precision_score(y, scores), abs=1e-12)
