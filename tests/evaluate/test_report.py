"""Alert spans -> predictions, and the report files (JSON, markdown, PNG) from a hand-built replay."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from streamdet.evaluate.backtest import EntityRun
from streamdet.evaluate.report import entity_metrics, interpretation_pairs, to_markdown, write_report


def _run() -> EntityRun:
    n = 40
    scores = np.linspace(0, 1, n)
    run = EntityRun("machine-x", scores, np.full(n, 0.5), (scores > 0.5).astype(np.int8))
    run.alerts = [
        {"status": "firing", "row": 10, "top_channels": [{"name": "b", "share": .7}, {"name": "a", "share": .3}]},
        {"status": "resolved", "row": 15},
        {"status": "firing", "row": 30, "top_channels": [{"name": "c", "share": 1.0}]},
    ]
    return run


def _series(n: int = 40):
    labels = np.zeros(n, dtype=np.int8)
    labels[12:18] = 1
    return SimpleNamespace(entity="machine-x", test_labels=labels, interpretation=[(12, 17, [1])])


def test_alert_mask_covers_firing_until_resolve_and_open_to_end():
    mask = _run().alert_mask()
    assert np.flatnonzero(mask).tolist() == list(range(10, 15)) + list(range(30, 40))
    assert np.flatnonzero(_run().firing_rows()).tolist() == [10, 30]


def test_entity_metrics_from_alerts_and_raw_over():
    values, raw = entity_metrics(_run(), _series(), ["a", "b", "c"])
    # alerts cover rows 10-14 and 30-39; label rows 12-17 -> tp 3 (12,13,14), fp 12, fn 3
    assert values["alert.point_precision"] == pytest.approx(3 / 15)
    assert values["alert.point_recall"] == pytest.approx(3 / 6)
    assert values["alert.detection_delay"] == pytest.approx(0.0)  # first covered label row is the segment start
    assert values["alerts"] == 2 and values["anomalous_rows"] == 6


def test_interpretation_uses_alerts_inside_labelled_segments():
    series = _series()
    series.interpretation = [(8, 17, [1])]  # 0-based channel 1 = "b"
    pairs = interpretation_pairs(_run(), series, ["a", "b", "c"])
    assert pairs == [(["b", "a"], {"b"})]


def test_an_alert_on_the_row_after_an_interpreted_segment_is_outside_it():
    series = _series()
    series.interpretation = [(8, 10, [1]), (11, 31, [2])]  # end-exclusive: row 10 is past the first, 30 in the second
    pairs = interpretation_pairs(_run(), series, ["a", "b", "c"])
    assert pairs == [(["c"], {"c"})]


def test_written_report_files(tmp_path):
    run, series = _run(), _series()
    values, _ = entity_metrics(run, series, ["a", "b", "c"])
    report = {"dataset": "smd", "model": {"name": "pca", "sha256": "0", "window": 10},
              "threshold": {"method": "pot", "risk": 1e-3, "update": True},
              "alerting": {"min_consecutive": 3, "cooldown": 10}, "scoring_stride": 10, "vus_max_window": 100,
              "entities": [values], "aggregate": {"macro": {"vus_pr": values["vus_pr"]}}}
    write_report(report, [run], [series], tmp_path)
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["entities"][0]["alert.point_precision"] == pytest.approx(0.2)
    assert "| machine-x | 40 | 6 | 2 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "machine-x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "VUS-PR" in to_markdown(report)
