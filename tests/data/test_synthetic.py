"""The synthetic generator: every kind injected and labelled where it says, reproducible by seed."""

from __future__ import annotations

import numpy as np

from streamdet.config import load_config
from streamdet.data import KINDS, generate, load_series

from ..conftest import SMD_CONFIG


def test_each_kind_is_present_labelled_and_changes_the_data():
    s = generate(seed=3, n_channels=8, train_length=2000, test_length=3000, test_anomalies=10)
    assert {kind for _, _, kind in s.segment_kinds} == set(KINDS)
    clean = generate(seed=3, n_channels=8, train_length=2000, test_length=3000, test_anomalies=0)
    for (start, end, kind), (_, _, channels) in zip(s.segment_kinds, s.interpretation):
        assert s.test_labels[start:end].all(), kind
        diff = np.abs(s.test[start:end] - clean.test[start:end])
        assert diff[:, channels].max() > 0.3, f"{kind} left its channels unchanged"
        others = [c for c in range(8) if c not in channels]
        assert diff[:, others].max() == 0.0, f"{kind} touched channels it does not name"
    assert int(s.test_labels.sum()) == sum(end - start for start, end, _ in s.segment_kinds)
    assert s.train_labels is None


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate(seed=1), generate(seed=1)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.test, generate(seed=2).test)


def test_train_anomalies_are_labelled_for_semi_supervised_models():
    s = generate(seed=0, train_anomalies=4)
    assert len(s.train_segment_kinds) == 4 and s.train_labels is not None
    expected = np.zeros(len(s.train), dtype=np.int8)
    for start, end, _ in s.train_segment_kinds:
        expected[start:end] = 1
    np.testing.assert_array_equal(s.train_labels, expected)
    clean = generate(seed=0)
    np.testing.assert_array_equal(s.train[expected == 0], clean.train[expected == 0])
    assert not np.array_equal(s.train, clean.train)


def test_config_entities_are_independent_series():
    cfg = load_config(SMD_CONFIG, ["data.dataset=synthetic", "data.synthetic_entities=2",
                                   "data.synthetic_length=2000", "data.synthetic_channels=5"])
    a, b = load_series(cfg)
    assert (a.entity, b.entity) == ("synthetic-0", "synthetic-1")
    assert a.train.shape == (1142, 5) and a.test.shape == (858, 5)  # 4/7 train, 3/7 test
    assert not np.array_equal(a.test, b.test)


def test_default_entity_is_demo_sized_with_a_benchmark_like_anomaly_share():
    cfg = load_config(SMD_CONFIG, ["data.dataset=synthetic"])
    series = load_series(cfg)
    assert [s.entity for s in series] == ["synthetic-0", "synthetic-1", "synthetic-2"]
    for s in series:
        assert s.train.shape == (4000, 8) and s.test.shape == (3000, 8)
        assert 0.03 < s.test_labels.mean() < 0.15, s.test_labels.mean()
