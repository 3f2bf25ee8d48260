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
    assert scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1) and scaled_sigmoid(3.0) > -1.0
    assert scaled_sigmoid(3.01) == -1.0  # NAB: only positions strictly past 3 are clamped


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
    for profile in ("standard",):  # the sweep is the same code for every profile
        values = []
        for t in np.unique(np.concatenate(list(scores.values()))):
            values.append(corpus_score({e: s >= t for e, s in scores.items()}, windows)[f"nab_{profile}"])
        best_by_hand[profile] = max(values)
        assert out[f"nab_{profile}_optimised"] == pytest.approx(best_by_hand[profile], abs=1e-9)
    # the optimum keeps both true peaks and drops the false one and the noise: both windows found at their start
    assert 1.0 < out["nab_standard_optimised_threshold"] <= 1.5
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


# Hand-computed cases. Every expected number below was worked out on paper from numenta/NAB's rules (nab/sweeper.py,
# nab/runner.py, config/profiles.json), not from this module:
#   S(x) = 2 / (1 + exp(5x)) - 1;  S(-1) = 0.9866143 (maxTP)
#   a row i in window [a, b] earns S(-(b - i + 1) / (b - a + 1)) / maxTP x tpWeight (only the window's best counts)
#   a row outside every window costs fpWeight x -1 before the first window, else fpWeight x S(|b_prev - i| / (w_prev - 1))
#   a window without detection costs -fnWeight; rows before min(floor(0.15 n), 750) are ignored
#   normalised = 100 (raw - null) / (perfect - null), null = -fnWeight x windows, perfect = tpWeight x windows
# For a 20-row file with the window [10, 13]: probation is rows 0..2; a detection at row 11 earns
# S(-0.75) / maxTP = 0.9541 / 0.9866 = 0.9669891; at row 12 S(-0.5) / maxTP = 0.8597926; a false positive at row 5
# costs -0.11; at row 16 (|13 - 16| / 3 = 1.0) 0.11 x S(1) = -0.1085276.

HAND_WINDOW = [(10, 13)]


def test_file_score_matches_a_hand_computed_nab_score():
    det = np.zeros(20, bool)
    det[[1, 5, 11, 12, 16]] = True  # 1: probation (ignored); 5: FP; 11: TP; 12: later in the window (ignored); 16: FP
    raw, counted = file_score(det, HAND_WINDOW, "standard")
    assert counted == 1
    assert raw == pytest.approx(-0.11 + 0.9669891 - 0.1085276, abs=1e-6)  # 0.7484615
    assert corpus_score({"f": det}, {"f": HAND_WINDOW})["nab_standard"] == pytest.approx(87.42308, abs=1e-4)


def hand_scores():
    a, b = np.full(20, 0.1), np.full(20, 0.1)
    a[1], a[5], a[11], a[12], a[16] = 0.95, 0.9, 0.8, 0.8, 0.3  # 0.95 sits in probation: never a detection
    b[4], b[12] = 0.75, 0.7
    return {"a": a, "b": b}, {"a": HAND_WINDOW, "b": HAND_WINDOW}


def test_corpus_threshold_sweep_matches_a_hand_computed_optimum():
    """Raw corpus score by threshold, by hand: none -2 (null); 0.9: -2.11; 0.8: -0.1430109 (a's window at row 11);
    0.75: -0.2530109; 0.7: 1.6067817 (b's window at row 12); 0.3: 1.4982541; 0.1: every row, -0.771 (both windows
    at their first row, 7 + 6 false positives per file). Best: 0.7, normalised 100 (1.6067817 + 2) / 4 = 90.16954."""
    scores, windows = hand_scores()
    out = optimised_corpus_score(scores, windows)
    assert out["nab_standard_optimised_threshold"] == pytest.approx(0.7)
    assert out["nab_standard_optimised"] == pytest.approx(90.16954, abs=1e-4)
    # reward_low_FN_rate (fnWeight 2): null -4, perfect 2, the same rows: 100 (1.6067817 + 4) / 6
    assert out["nab_reward_low_FN_rate_optimised"] == pytest.approx(93.44636, abs=1e-4)


def test_corpus_sweep_falls_back_to_the_null_detector_when_every_threshold_loses():
    """100 rows, window [50, 53] scored lowest: any threshold that finds the window (+2 over the null) also detects
    the 81 rows outside it past probation (35 x -0.11 before it, 46 rows after, about -0.11 each): null is best."""
    scores = np.full(100, 0.5)
    scores[50:54] = 0.1
    out = optimised_corpus_score({"f": scores}, {"f": [(50, 53)]})
    assert out["nab_standard_optimised"] == pytest.approx(0.0) and math.isinf(out["nab_standard_optimised_threshold"])
