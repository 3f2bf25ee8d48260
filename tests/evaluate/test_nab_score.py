"""NAB scoring rules on hand-built files, and window loading from the real NAB label file."""

import math
from pathlib import Path

import numpy as np
import pytest

from streamdet.errors import DataError
from streamdet.evaluate.nab_score import (corpus_score, file_score, load_windows, probation_length, scaled_sigmoid)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"


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


@pytest.mark.skipif(not DATA.exists(), reason="benchmark data not present")
def test_windows_map_to_rows_that_match_the_row_labels():
    import gzip

    entity = "realKnownCause/nyc_taxi"
    windows = load_windows(DATA, [entity])[entity]
    with gzip.open(DATA / f"{entity}.test_label.csv.gz", "rt") as fh:
        labels = np.array([int(x) for x in fh.read().split()[1:]])
    rebuilt = np.zeros_like(labels)
    for a, b in windows:
        rebuilt[a:b + 1] = 1
    assert len(windows) == 5 and np.array_equal(rebuilt, labels)
    with pytest.raises(DataError, match="no windows"):
        load_windows(DATA, ["realKnownCause/not_a_file"])
