"""Loaders on a miniature of the shared layout (always) and on the real benchmark files (when they are there), the
user CSV loader, and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.config import load_config
from streamdet.data import label_segments, list_entities, load_series, sliding_windows
from streamdet.errors import DataError

from ..conftest import SMD_CONFIG
from .mini_layout import ENTITIES, NAB_STEP_S, ROWS, write_layout


def cfg_for(dataset: str, *overrides: str):
    return load_config(SMD_CONFIG, [f"data.dataset={dataset}", *overrides])


@pytest.fixture
def mini(tmp_path):
    """(root, series) of a miniature shared layout: one entity in each of smd/, asd/, nab/."""
    root = tmp_path / "data"
    return root, write_layout(root)


@pytest.mark.parametrize("dataset", ["smd", "asd"])
def test_layout_files_load_with_end_exclusive_interpretation(mini, dataset):
    """SMD's ranges are written end-exclusive and ASD's end-inclusive: both load end-exclusive, equal to the
    generator's, and cover exactly the labelled rows."""
    root, series = mini
    cfg = cfg_for(dataset, f"data.root={root}")
    assert list_entities(cfg) == [ENTITIES[dataset]]
    (s,) = load_series(cfg)
    assert s.entity == ENTITIES[dataset] and s.channels == series.channels and s.test_labels.dtype == np.int8
    np.testing.assert_allclose(s.train, series.train, atol=1e-6)
    np.testing.assert_allclose(s.test, series.test, atol=1e-6)
    np.testing.assert_array_equal(s.test_labels, series.test_labels)
    assert s.interpretation == series.interpretation and len(s.interpretation) == 3
    rebuilt = np.zeros(ROWS, np.int8)
    for start, end, _ in s.interpretation:
        rebuilt[start:end] = 1
    np.testing.assert_array_equal(rebuilt, s.test_labels)


def test_layout_nab_takes_the_probationary_period_as_train_and_parses_timestamps(mini):
    root, series = mini
    (s,) = load_series(cfg_for("nab", f"data.root={root}"), [ENTITIES["nab"]])
    assert s.test.shape == (ROWS, 1) and len(s.train) == int(ROWS * 0.15) and s.train_labels is None
    np.testing.assert_array_equal(s.train, s.test[:len(s.train)])
    np.testing.assert_allclose(s.test[:, 0], series.test[:, 0], atol=1e-6)
    assert np.all(np.diff(s.test_timestamps) == NAB_STEP_S) and s.test_timestamps[0] == 1404172800.0  # 2014-07-01


def test_layout_cached_load_equals_the_parsed_one(mini, private_cache):
    root, _ = mini
    cfg = cfg_for("smd", f"data.root={root}")
    (parsed,) = load_series(cfg)
    assert len(list(private_cache.glob(f"{ENTITIES['smd']}.*.npz"))) == 2  # train and test
    (cached,) = load_series(cfg)
    np.testing.assert_array_equal(cached.train, parsed.train)
    np.testing.assert_array_equal(cached.test, parsed.test)
    assert cached.channels == parsed.channels


def test_layout_unknown_entity_is_named(mini):
    root, _ = mini
    with pytest.raises(DataError, match="machine-9-9"):
        load_series(cfg_for("smd", f"data.root={root}"), ["machine-9-9"])


def test_smd_machine_shapes_labels_and_interpretation(benchmark_data):
    (s,) = load_series(cfg_for("smd"), ["machine-1-2"])
    assert s.train.shape == (23694, 38) and s.test.shape == (23694, 38)
    assert s.train.dtype == np.float32 and s.test_labels.dtype == np.int8
    assert s.channels[:2] == ["cpu_r", "load_1"] and len(s.channels) == 38
    assert int(s.test_labels.sum()) == 542  # entities.csv: test_anomaly_points
    # interpretation: first line of the file is 4629-4688:9,10,11,13,15,18 (1-based channels, end exclusive)
    start, end, channels = s.interpretation[0]
    assert (start, end, channels) == (4629, 4688, [8, 9, 10, 12, 14, 17])
    assert s.test_labels[start:end].all()


def test_every_smd_and_asd_entity_is_listed(benchmark_data):
    assert len(list_entities(cfg_for("smd"))) == 19
    assert len(list_entities(cfg_for("asd"))) == 12
    (a,) = load_series(cfg_for("asd"), [list_entities(cfg_for("asd"))[0]])
    assert a.train.shape[1] == 19 and len(a.test_labels) == len(a.test)


@pytest.mark.parametrize("dataset,entity", [("smd", "machine-1-2"), ("asd", "omi-1")])
def test_interpretation_ranges_are_end_exclusive_and_match_the_labels(benchmark_data, dataset, entity):
    """SMD's files end-exclusive, ASD's inclusive: both come out end-exclusive, bounded by unlabelled rows."""
    (s,) = load_series(cfg_for(dataset), [entity])
    assert s.interpretation
    for start, end, _ in s.interpretation:
        assert s.test_labels[start:end].all() and s.test_labels[end] == 0, (start, end)


def test_nab_uses_the_probationary_period_as_train_and_parses_timestamps(benchmark_data):
    (s,) = load_series(cfg_for("nab"), ["realKnownCause/nyc_taxi"])
    assert s.test.shape == (10320, 1) and len(s.train) == 750  # 15 %, at most 750 rows: what NAB leaves unscored
    np.testing.assert_array_equal(s.train, s.test[:len(s.train)])
    assert s.test_timestamps[1] - s.test_timestamps[0] == 1800.0  # 30-minute steps from 2014-07-01 00:00


def test_a_missing_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "smd")):
        load_series(cfg_for("smd", f"data.root={tmp_path}"))


def test_user_csv_with_labels_and_a_bad_cell(tmp_path):
    (tmp_path / "train.csv").write_text("cpu,mem\n0.1,0.2\n0.2,0.3\n0.3,0.4\n")
    (tmp_path / "test.csv").write_text("cpu,mem\n0.1,0.2\n0.9,0.9\n")
    (tmp_path / "labels.csv").write_text("label\n0\n1\n")
    cfg = cfg_for("csv", f"data.csv_train={tmp_path / 'train.csv'}", f"data.csv_test={tmp_path / 'test.csv'}",
                  f"data.csv_labels={tmp_path / 'labels.csv'}")
    (s,) = load_series(cfg)
    assert s.channels == ["cpu", "mem"] and s.train.shape == (3, 2) and s.test_labels.tolist() == [0, 1]
    (tmp_path / "test.csv").write_text("cpu,mem\n0.1,0.2\n0.9,oops\n")
    with pytest.raises(DataError, match=r"test\.csv: line 3, column 2: 'oops'"):
        load_series(cfg)
    (tmp_path / "test.csv").write_text("cpu,mem\n0.1,0.2\n0.9\n")
    with pytest.raises(DataError, match=r"test\.csv: line 3 has 1 columns, the header has 2"):
        load_series(cfg)
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        load_series(cfg_for("csv", f"data.csv_train={tmp_path / 'missing.csv'}",
                            f"data.csv_test={tmp_path / 'test.csv'}"))


def test_sliding_windows_is_a_view_with_the_right_rows():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = sliding_windows(x, 4, 3)  # windows start at rows 0, 3, 6
    assert w.shape == (3, 4, 2) and np.shares_memory(w, x)
    np.testing.assert_array_equal(w[1], x[3:7])
    with pytest.raises(DataError, match="shorter than the window"):
        sliding_windows(x, 11, 1)


def test_label_segments():
    assert label_segments(np.array([0, 1, 1, 0, 1])) == [(1, 3), (4, 5)]
