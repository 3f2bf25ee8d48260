"""Threshold-dependent metrics on small series whose answers are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from streamdet.errors import StreamdetError
from streamdet.evaluate.metrics import (best_f1, count, hit_rate, interpretation_scores, macro, ndcg,
                                        paired_difference, summarise, threshold_metrics)

#                 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19
LABELS = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
PRED = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0])


def test_point_metrics():
    m = threshold_metrics(LABELS, PRED)
    # predicted {4,5,6,16,17}; anomalous {2,3,4,5,12,13}: tp=2 (4,5), fp=3, fn=4
    assert m["point_precision"] == pytest.approx(2 / 5)
    assert m["point_recall"] == pytest.approx(2 / 6)
    assert m["point_f1"] == pytest.approx(2 * 0.4 * (1 / 3) / (0.4 + 1 / 3))


def test_event_metrics_count_each_segment_once():
    m = threshold_metrics(LABELS, PRED)
    # segments [2..5] found, [12..13] missed -> event recall 1/2; runs [4..6] true, [16..17] false -> precision 1/2
    assert m["event_recall"] == pytest.approx(0.5)
    assert m["event_precision"] == pytest.approx(0.5)
    assert m["event_f1"] == pytest.approx(0.5)
    # composite: point precision 0.4 with event recall 0.5
    assert m["composite_f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)


def test_delay_and_false_alert_rate():
    m = threshold_metrics(LABELS, PRED)
    assert m["detection_delay"] == pytest.approx(2.0)  # segment starts at 2, first hit at 4
    assert m["false_alerts_per_1k"] == pytest.approx(1000 * 1 / 20)  # one false run in 20 steps


def test_point_adjusted_f1_marks_found_segments_whole():
    m = threshold_metrics(LABELS, PRED)
    # PA: segment [2..5] all 4 points tp, [12..13] 2 fn, fp stays 3 -> P=4/7, R=4/6
    p, r = 4 / 7, 4 / 6
    assert m["pa_f1_paper_only"] == pytest.approx(2 * p * r / (p + r))


def test_micro_sum_of_counts_equals_concatenation():
    a = count(LABELS, PRED)
    b = count(LABELS[::-1].copy(), PRED)
    joined = count(np.r_[LABELS, 0, LABELS[::-1]], np.r_[PRED, 0, PRED])
    summed = a + b
    assert summed.tp == joined.tp and summed.fp == joined.fp and summed.events == joined.events
    assert summarise(summed)["point_f1"] == pytest.approx(summarise(joined)["point_f1"])


def test_no_anomalies_gives_nan_recall_not_zero():
    m = threshold_metrics(np.zeros(10, int), np.r_[np.zeros(9, int), 1])
    assert math.isnan(m["point_recall"]) and m["point_precision"] == 0.0
    assert m["false_alerts_per_1k"] == pytest.approx(100.0)


def test_bad_input_is_named():
    with pytest.raises(StreamdetError, match="differ in length"):
        threshold_metrics(LABELS, PRED[:-1])
    with pytest.raises(StreamdetError, match="0/1"):
        threshold_metrics(LABELS * 2, PRED)


def test_best_f1_finds_the_separating_threshold():
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    scores = np.array([.1, .2, .9, .3, .2, .1, .1, .8, .1, .5])
    out = best_f1(labels, scores)
    # threshold 0.8: tp=2 (rows 2, 7), fp=0, fn=1 -> F1 0.8; threshold 0.3 adds row 3 but also row 9 -> 6/7
    assert out["best_f1_paper_only"] == pytest.approx(6 / 7)
    # PA at threshold 0.8: both segments found, tp=3, fp=0 -> 1.0
    assert out["best_pa_f1_paper_only"] == pytest.approx(1.0)


def test_hit_rate_and_ndcg():
    truth = {"a", "b"}
    assert hit_rate(["a", "c", "b"], truth, 100) == pytest.approx(0.5)  # top 2: a, c
    assert hit_rate(["a", "c", "b"], truth, 150) == pytest.approx(1.0)  # top 3
    ideal = 1 + 1 / np.log2(3)
    assert ndcg(["c", "a", "b"], truth, 100) == pytest.approx((1 / np.log2(3)) / ideal)
    assert ndcg(["c", "a", "b"], truth, 150) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal)
    out = interpretation_scores([(["a", "b"], truth), (["c", "d"], truth)])
    assert out["hitrate@100"] == pytest.approx(0.5) and out["interpreted_alerts"] == 2


def test_macro_ignores_nan_entities():
    out = macro([{"point_f1": 0.5, "name": "x"}, {"point_f1": float("nan")}, {"point_f1": 1.0}])
    assert out == {"point_f1": pytest.approx(0.75)}


def test_paired_difference_is_ahead_when_every_entity_improves():
    a = {f"e{i}": 0.5 + 0.01 * i for i in range(10)}
    b = {e: v - 0.1 for e, v in a.items()}
    d = paired_difference(a, b)
    assert d.entities == 10 and d.mean == pytest.approx(0.1)
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.1)  # no spread: every resample is 0.1
    assert d.verdict == "ahead"


def test_paired_difference_calls_a_small_mixed_difference_a_tie():
    a = {"e0": 0.9, "e1": 0.2, "e2": 0.6, "e3": 0.4, "e4": 0.5}
    b = {"e0": 0.5, "e1": 0.5, "e2": 0.5, "e3": 0.5, "e4": 0.5}  # differences +0.4, -0.3, +0.1, -0.1, 0: mean +0.02
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.02)
    assert d.low < 0 < d.high and d.verdict == "tie"
    assert paired_difference(b, {e: v + 1 for e, v in a.items()}).verdict == "behind"


def test_paired_difference_pairs_only_entities_scored_by_both():
    a = {"e0": 0.3, "e1": float("nan"), "e2": 0.5, "e3": 0.7, "only_a": 1.0}
    b = {"e0": 0.1, "e1": 0.2, "e2": 0.3, "e3": 0.5}
    d = paired_difference(a, b)
    assert d.entities == 3 and d.mean == pytest.approx(0.2)
    assert paired_difference({"e0": 1.0, "e1": 1.0}, {"e0": 0.0, "e1": 0.0}) is None  # too few to resample


def test_a_silent_detector_on_an_entity_with_anomalies_scores_f1_zero_not_nan():
    # labels hold a segment, nothing is predicted: recall 0, precision undefined -> F1 is 0 (2tp / (2tp+fp+fn)), so
    # a macro mean cannot skip the entity and reward the silence
    m = threshold_metrics(LABELS, np.zeros_like(PRED))
    assert m["point_recall"] == 0.0 and math.isnan(m["point_precision"])
    for key in ("point_f1", "event_f1", "composite_f1", "pa_f1_paper_only"):
        assert m[key] == 0.0, key
    silent, loud = threshold_metrics(LABELS, np.zeros_like(PRED)), threshold_metrics(LABELS, PRED)
    assert macro([silent, loud])["event_f1"] == pytest.approx(loud["event_f1"] / 2)
    # without labelled anomalies F1 stays undefined (docs/evaluation.md: such entities are skipped)
    assert math.isnan(threshold_metrics(np.zeros(10, int), np.zeros(10, int))["point_f1"])
