"""NAB scoring rules on hand-built files, and window loading from the real NAB label file."""

import math

import numpy as np
import pytest

from streamdet.errors import DataError
from streamdet.evaluate.nab_score import (corpus_score, file_score, load_windows, optimised_corpus_score,
                                         probation_length, relative_scores, scaled_sigmoid)


def test_scaled_sigmoid_shape():
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_is_15_percent_capped_at_750():
    assert probation_length(1000) == 150 and probation_length(20000) == 750


def test_detection_at_window_start_earns_full_weight():
    windows = [(500, 599)]
    det = np.zeros(1000, bool)
    det[500] = True
    score, n = file_score(det, windows, "standard")
    assert n == 1 and score == pytest.approx(1.0)


def test_missed_window_and_false_positives():
    windows = [(500, 599)]
    det = np.zeros(1000, bool)
    det[300] = True  # before any window: full fp weight
    score, _ = file_score(det, windows, "standard")
    assert score == pytest.approx(-1.0 - 0.11)
    score_fn, _ = file_score(det, windows, "reward_low_FN_rate")
    assert score_fn == pytest.approx(-2.0 - 0.11)


def test_only_earliest_detection_in_window_counts():
    windows = [(500, 599)]
    det = np.zeros(1000, bool)
    det[[550, 560]] = True
    score, _ = file_score(det, windows, "standard")
    expected = scaled_sigmoid(-(599 - 550 + 1) / 100) / scaled_sigmoid(-1.0)
    assert score == pytest.approx(expected)


def test_detection_in_probation_is_ignored():
    det = np.zeros(1000, bool)
    det[10] = True
    assert file_score(det, [(500, 599)], "standard")[0] == pytest.approx(-1.0)


def test_normalised_null_is_zero_and_perfect_is_hundred():
    windows = {"a": [(500, 599)], "b": [(300, 320), (700, 720)]}
    null = {"a": np.zeros(1000, bool), "b": np.zeros(1000, bool)}
    perfect = {"a": np.isin(np.arange(1000), [500]), "b": np.isin(np.arange(1000), [300, 700])}
    assert corpus_score(null, windows)["nab_standard"] == pytest.approx(0.0)
    assert all(v == pytest.approx(100.0) for v in corpus_score(perfect, windows).values())


def test_windows_map_to_rows_that_match_the_row_labels(benchmark_data):
    import gzip

    nab = benchmark_data / "nab"
    entity = "realKnownCause/nyc_taxi"
    windows = load_windows(nab, [entity])[entity]
    with gzip.open(nab / f"{entity}.test_label.csv.gz", "rt") as fh:
        labels = np.array([int(x) for x in fh.read().split()[1:]])
    rebuilt = np.zeros_like(labels)
    for a, b in windows:
        rebuilt[a:b + 1] = 1
    assert len(windows) == 5 and np.array_equal(rebuilt, labels)
    with pytest.raises(DataError, match="no windows"):
        load_windows(nab, ["realKnownCause/not_a_file"])


def small_corpus():
    """Two files: a clear peak at each window's start, background noise, and one false peak between them."""
    rng = np.random.default_rng(3)
    a, b = rng.random(1000) * 0.3, rng.random(1200) * 0.3
    a[400], b[700] = 2.0, 1.5  # inside the windows, at their first row
    a[800] = 1.0  # a false alarm, weaker than both true peaks
    return {"a": a, "b": b}, {"a": [(400, 449)], "b": [(700, 759)]}


def test_nab_protocol_finds_the_corpus_threshold_a_brute_force_sweep_finds():
    scores, windows = small_corpus()
    out = optimised_corpus_score(scores, windows)
    best_by_hand = {}
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        values = []
        for t in np.unique(np.concatenate(list(scores.values()))):
            values.append(corpus_score({e: s >= t for e, s in scores.items()}, windows)[f"nab_{profile}"])
        best_by_hand[profile] = max(values)
        assert out[f"nab_{profile}_optimised"] == pytest.approx(best_by_hand[profile], abs=1e-9)
    # the optimum keeps both true peaks and drops the false one and the noise: both windows found at their start
    assert 1.0 < out["nab_standard_threshold"] <= 1.5
    assert best_by_hand["standard"] == pytest.approx(100.0, abs=1e-6)


def test_nab_protocol_is_never_below_any_fixed_threshold():
    scores, windows = small_corpus()
    out = optimised_corpus_score(scores, windows)
    for t in (0.1, 0.25, 0.9, 1.2, 5.0):
        fixed = corpus_score({e: s >= t for e, s in scores.items()}, windows)["nab_standard"]
        assert out["nab_standard_optimised"] >= fixed - 1e-9


def test_relative_scores_put_files_on_one_scale_and_ignore_unscored_rows():
    rel = relative_scores(np.array([1.0, 4.0, np.nan, 2.0]), np.array([2.0, 2.0, 2.0, np.nan]))
    np.testing.assert_allclose(rel[:2], [-0.5, 1.0])
    assert np.isneginf(rel[2]) and np.isneginf(rel[3])
