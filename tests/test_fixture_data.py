"""The premise of the broker tests' data (tests/fixture_data.py): the replayed slices hold one labelled anomaly, and
the session's tiny bundle alerts on it by a wide margin and nowhere else, backtested through the live pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.evaluate.backtest import replay_entity
from tests.conftest import SMD_CONFIG, TINY_CHANNELS, TINY_ENTITY, tiny_overrides
from tests.fixture_data import OVERRIDES, anomaly, replay_slice, series, split_labels, split_rows
from tests.integration import test_daemon_e2e
from tests.reliability import helpers as reliability

SCENARIOS = {"e2e": (test_daemon_e2e.FIRST_ROW, test_daemon_e2e.LAST_ROW),
             "reliability": (reliability.FIRST_ROW, reliability.LAST_ROW)}


def test_the_fixture_is_one_labelled_entity_generated_from_a_fixed_seed():
    s = series()
    assert s.entity == TINY_ENTITY and s.train.shape == (4000, TINY_CHANNELS) and s.test.shape == (3000, TINY_CHANNELS)
    start, end = anomaly()
    assert split_labels(start, end).all() and split_labels(start - 1, start).sum() == split_labels(end, end + 1).sum() == 0
    from streamdet.data import load_series

    (again,) = load_series(load_config(SMD_CONFIG, list(OVERRIDES)))  # series() is cached; this generates anew
    np.testing.assert_array_equal(again.test, s.test)


def test_every_scenario_slice_holds_exactly_the_anomaly():
    for first, last in SCENARIOS.values():
        assert split_labels(first, last).sum() == np.subtract(*anomaly()[::-1])
    with pytest.raises(ValueError, match="not just"):
        replay_slice(465, lead=anomaly()[0] + 1)  # would begin before the split
    with pytest.raises(ValueError, match="not just"):
        replay_slice(465, lead=400)  # would hold the frequency segment at rows 1282-1364 too


def test_the_tiny_bundle_alerts_on_the_anomaly_by_a_margin_and_nowhere_else(tiny_bundle):
    cfg = load_config(SMD_CONFIG, tiny_overrides(tiny_bundle))
    start, end = anomaly()
    for name, (first, last) in SCENARIOS.items():
        run = replay_entity(cfg, load_bundle(tiny_bundle), TINY_ENTITY, split_rows(first, last))
        firing = [first + a["row"] for a in run.alerts if a["status"] == "firing"]
        assert len(firing) == 1 and start <= firing[0] < end, (name, firing)
        ratio = run.scores / run.thresholds
        at_anomaly = np.zeros(len(ratio), bool)
        at_anomaly[start - first:end - first] = True
        assert np.nanmax(ratio[at_anomaly]) > 2.0, name  # 6.9 when this was written
        assert np.nanmax(ratio[~at_anomaly]) < 0.9, name  # 0.68
