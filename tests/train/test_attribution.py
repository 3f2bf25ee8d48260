"""How alerts rank channels (train.attribution): chosen on anomalies injected into validation tails, on a real
fitted detector, and served by the real pipeline.

The generated series has one unpredictable channel (white noise: its reconstruction error is large at every row)
among smooth ones. Ranking raw contributions names the noisy channel in nearly every alert; ranking each channel's
contribution against its own validation distribution names the channels the anomaly touched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdet.config import load_config
from streamdet.data.series import Series
from streamdet.evaluate.backtest import replay_entity
from streamdet.bundle import load_bundle
from streamdet.pipeline.alerts import top_channels
from streamdet.pipeline.attribution import attributed
from streamdet.train import train_bundle, train_model
from streamdet.train.attribution import METHODS, fit_attribution, fit_record, injected_interpretation
from streamdet.train.calibration import daemon_like_outputs, scored_inputs, scored_window_medians, scoring_windows

from ..conftest import SMD_CONFIG

BASE = ["data.dataset=synthetic", "model.window=16", "train.epochs=3", "train.device=cpu", "scoring.stride=4",
        "model.preset=tiny", "train.normalisation=none",
        "threshold.init_level=0.98"]  # segments "alerted" at the 98th percentile of clean scores, as written
CHANNELS = ["noisy", "s1", "s2", "s3", "s4", "s5", "s6", "s7"]


def noisy_and_smooth(n: int = 3000, seed: int = 0) -> Series:
    """Channel 0 loud white noise (std 10; the models here train without input scaling, as auto's
    `normalisation=none` candidates do); channels 1.. slow waves with a little noise. The test split has level shifts
    on one smooth channel at a time."""
    rng = np.random.default_rng(seed)

    def rows(offset: int, k: int) -> np.ndarray:
        t = np.arange(offset, offset + k)[:, None]
        smooth = np.sin(t / (12.0 + np.arange(1, len(CHANNELS))) + np.arange(1, len(CHANNELS)))
        x = np.concatenate([rng.standard_normal((k, 1)) * 10.0, smooth + 0.05 * rng.standard_normal(smooth.shape)], 1)
        return x.astype(np.float32)

    test, labels, interp = rows(n, n), np.zeros(n, np.int8), []
    for i, start in enumerate(range(300, n - 100, 300)):
        channel = 1 + i % (len(CHANNELS) - 1)
        test[start:start + 40, channel] += 3.0
        labels[start:start + 40] = 1
        interp.append((start, start + 40, [channel]))
    return Series("noisy-smooth", CHANNELS, rows(0, n), test, labels, interpretation=interp)


@pytest.fixture(scope="module")
def fitted():
    cfg = load_config(SMD_CONFIG, BASE)
    series = noisy_and_smooth()
    return cfg, series, train_model(cfg, [series], "autoencoder", progress=False)


def test_each_channels_own_scale_ranks_injected_channels_first_where_raw_contributions_do_not(fitted):
    """The default (`local`) ranks above raw contributions here, but lower than `input`: these waves are slower than
    the 16-row window, so a value's distance from the window's median varies widely on validation (on SMD's and
    ASD's validation tails, windows of 100, it ranks higher: docs/evaluation.md, "Alert attribution")."""
    cfg, _, trained = fitted
    scores = injected_interpretation(trained.served, trained.windows.val_tails, trained.window, cfg.scoring.stride,
                                     trained.context, cfg.threshold.init_level, seed=0, copies=40)
    raw = scores["raw"]["hitrate@150"]
    assert cfg.train.attribution == "local" and set(scores) == set(METHODS)
    assert scores["local"]["interpreted_alerts"] >= 20
    for method in ("quantile", "input"):
        assert scores[method]["hitrate@150"] >= 0.5, scores  # frequency changes and broken correlations stay hard
        assert scores[method]["hitrate@150"] >= raw + 0.2, scores
    assert scores["local"]["hitrate@150"] >= raw + 0.05, scores


def test_attribution_records_and_their_errors():
    contrib = np.abs(np.random.default_rng(0).standard_normal((500, 3))) * np.array([10.0, 1.0, 0.0])
    record = fit_attribution("robust", contrib)
    assert record["method"] == "robust" and len(record["center"]) == 3
    assert min(record["spread"]) > 0  # the constant channel is floored, never a division by zero
    row = np.array([12.0, 3.0, 0.0])
    standardised = attributed(row, record)
    assert standardised[1] > standardised[0]  # 3 is far out for channel 1, 12 is ordinary for channel 0
    assert attributed(row, {"method": "raw"}) is row and attributed(row, None) is row
    short = row[:2]
    assert attributed(short, record) is short  # a record for other channels: raw contributions (logged), no crash
    with pytest.raises(ValueError, match="unknown attribution method 'median'"):
        fit_attribution("median", contrib)


def test_quantile_records_rank_each_channels_tail_probability():
    rng = np.random.default_rng(1)
    contrib = np.abs(rng.standard_normal((2000, 3))) * np.array([10.0, 1.0, 0.0])
    record = fit_attribution("quantile", contrib)
    knots = np.array(record["knots"])
    assert knots.shape == (len(record["levels"]), 3) and (np.diff(knots, axis=0) > 0).all()  # constant channel too
    # the same tail probability in each channel's own units gives the same surprise, whatever the scale
    same = attributed(np.quantile(contrib[:, :2], 0.99, axis=0), {**record, "knots": knots[:, :2].tolist()})
    assert np.allclose(same, 2.0)  # -log10(1 - 0.99)
    beyond = attributed(np.array([[knots[-1, 0] * 2, knots[-1, 1] * 4, 0.0]]), record)[0]
    assert beyond[1] > beyond[0] > attributed(knots[-1], record)[0]  # past the maximum: ranked by how far past
    assert attributed(np.array([0.0, 3.0, 0.0]), record)[1] > attributed(np.array([12.0, 0.0, 0.0]), record)[0]
    short = np.array([1.0, 2.0])
    assert attributed(short, record) is short  # a record for other channels: raw contributions (logged)
    few = fit_attribution("quantile", contrib[:300])  # the maximum of 300 rows sits below the 0.999 quantile
    assert (np.diff(few["levels"]) > 0).all() and few["levels"][-1] == 1.0 - 1.0 / 301


def test_quantile_surprise_is_each_channels_own_piecewise_line_below_between_and_past_its_knots():
    """All channels are interpolated at once; each must still follow its own knots: np.interp between them, the
    first step's line continued below the lowest knot and the last step's past the highest."""
    rng = np.random.default_rng(3)
    knots = np.sort(rng.random((5, 4)) * np.array([1.0, 10.0, 100.0, 0.01]), axis=0)  # [K, C], per-channel scales
    record = {"method": "quantile", "levels": [0.5, 0.9, 0.99, 0.999, 0.9999], "knots": knots.tolist()}
    levels = -np.log10(1.0 - np.array(record["levels"]))
    rows = np.concatenate((knots, knots * 0.5, knots * 3.0, rng.random((50, 4)) * knots[-1] * 1.5))  # [N, C]
    want = np.empty_like(rows)
    for ch in range(4):
        k, x = knots[:, ch], rows[:, ch]
        below = levels[0] + (x - k[0]) * (levels[1] - levels[0]) / (k[1] - k[0])
        past = levels[-1] + (x - k[-1]) * (levels[-1] - levels[-2]) / (k[-1] - k[-2])
        want[:, ch] = np.where(x < k[0], below, np.where(x > k[-1], past, np.interp(x, k, levels)))
    assert np.allclose(attributed(rows, record), want, rtol=1e-12, atol=1e-12)
    assert np.allclose(attributed(rows[7], record), want[7], rtol=1e-12, atol=1e-12)  # one alert's row [C]


@pytest.mark.parametrize("method", ["quantile", "input", "joint", "local"])
def test_the_daemons_alerts_name_the_shifted_channel_not_the_noisy_one(tmp_path, method):
    """`input` reads the firing point's values and `local` its window too, which the pipeline hands to the alert
    state machine: without them they rank the raw contributions, which name the noisy channel. `local` measures a
    value from its window's median, which a level shift moves once it fills half the window: it gets a 64-row window
    and is judged on the alerts in the first 32 rows of each shift, at a lower bar (the slowest wave spans most of
    the window, so its distances from the window's median vary widely on validation)."""
    window = ["model.window=64"] if method == "local" else []
    cfg = load_config(SMD_CONFIG, BASE + window + [
        "model.name=autoencoder", "alerting.min_consecutive=1", "alerting.cooldown=2", "threshold.method=percentile",
        "threshold.percentile=50", "threshold.update=false",  # alerts fire often, inside segments too
        f"train.attribution={method}"])
    series = noisy_and_smooth()
    bundle = load_bundle(train_bundle(cfg, series=[series], out=str(tmp_path / "b.pt"), progress=False).path)
    assert bundle.calibration["attribution"]["method"] == method
    run = replay_entity(cfg, bundle, series.entity, series.test)
    named = [(a["row"], a["top_channels"][0]["name"]) for a in run.alerts if a["status"] == "firing"]
    inside = [(name, CHANNELS[ch[0]]) for row, name in named for lo, hi, ch in series.interpretation
              if lo <= row < (lo + 32 if method == "local" else hi)]
    assert len(inside) >= 5, named
    assert sum(a == b for a, b in inside) >= (0.75 if method == "local" else 0.8) * len(inside), inside


def test_a_long_ranking_stays_ordered_past_the_channels_above_their_usual_level():
    standardised = np.array([-0.5, 2.0, -3.0, 0.5, -0.1])
    ranked = top_channels(standardised, ["a", "b", "c", "d", "e"], 5)
    assert [c["name"] for c in ranked] == ["b", "d", "e", "a", "c"]
    assert [c["share"] for c in ranked] == [0.8, 0.2, 0.0, 0.0, 0.0]
    assert top_channels(np.array([-1.0, -2.0]), ["a", "b"], 2) == []  # nothing above its usual level


class _Leaky(torch.nn.Module):
    """A detector that has learnt channel 1 = -2 x channel 0: channel 1's error is x1 + 2 x0 (near zero on normal
    rows), channel 0's 0.5 x0. A change in channel 0 alone breaks the relation, so channel 1's standardised error
    rises far more than channel 0's own (as a reconstruction through a shared code spreads it)."""

    def __init__(self, n: int):
        super().__init__()
        mix = torch.eye(n)
        mix[0, 0], mix[0, 1] = 0.5, 2.0
        self.register_buffer("mix", mix)

    def forward(self, raw):
        contrib = (raw @ self.mix) ** 2  # [B, L, C]
        return contrib.sum(-1), contrib


def test_the_response_attribution_names_the_channel_whose_change_leaked_into_another():
    rng = np.random.default_rng(2)
    normal = rng.standard_normal((401, 4))
    normal[:, 1] = -2.0 * normal[:, 0] + 0.01 * normal[:, 1]
    tails, served = [normal[:400].astype(np.float32)], _Leaky(4)
    contrib = served(torch.from_numpy(tails[0][None]))[1][0].numpy()
    tail = fit_record("tail", served, tails, 16, 4, 0, contrib)
    response = fit_record("response", served, tails, 16, 4, 0, contrib)
    assert np.asarray(response["response"]).shape == (4, 4) and response["base"] == tail
    row = normal[400].copy()
    row[0] += 4.0  # channel 0 moves alone
    observed = served(torch.from_numpy(row[None, None].astype(np.float32)))[1][0, 0].numpy()
    names = ["a", "b", "c", "d"]
    assert top_channels(attributed(observed, tail), names, 4)[0]["name"] == "b"  # the leak looks biggest
    assert top_channels(attributed(observed, response), names, 4)[0]["name"] == "a"  # unmixed: the one that moved
    with pytest.raises(ValueError, match="fit_record"):
        fit_attribution("response", contrib)


class _Echo(torch.nn.Module):
    """Contributions are the input rows themselves: what a scored row's contribution is, is which row it was."""

    def forward(self, raw):
        return raw.sum(-1), raw


@pytest.mark.parametrize("rows,window,stride,context", [(400, 16, 4, 0), (403, 16, 5, 0), (50, 16, 4, 3),
                                                         (17, 16, 4, 0), (10, 16, 4, 0)])
def test_scored_inputs_are_the_rows_the_contributions_belong_to(rows, window, stride, context):
    raw = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    _, contrib = daemon_like_outputs(_Echo(), raw, window, stride, context)
    assert np.array_equal(scored_inputs(raw, window, stride, context), contrib)


@pytest.mark.parametrize("rows,window,stride,context", [(400, 16, 4, 0), (403, 16, 5, 0), (50, 16, 4, 3),
                                                         (17, 16, 4, 0), (10, 16, 4, 0), (300, 16, 1, 0)])
def test_each_scored_row_sits_in_the_window_that_scored_it(rows, window, stride, context):
    """`local` measures a row from the median of the window that scored it: scored row r is row r % step of the
    last `step` rows of window r // step, and its median is that window's."""
    raw = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    inputs = scored_inputs(raw, window, stride, context)
    windows, step = scoring_windows(raw, window, stride, context)
    medians = scored_window_medians(raw, window, stride, context)
    assert len(medians) == len(inputs)
    for r in range(len(inputs)):
        assert np.array_equal(windows[r // step][window - step + r % step], inputs[r])
        assert np.array_equal(medians[r], np.median(windows[r // step], axis=0))


def test_the_local_attribution_judges_each_host_against_its_own_recent_level():
    """A fleet record fitted on two hosts whose channel 0 sits at 0 and at 100 meets a third host at 200 whose
    channel 1 is 6 of its standard deviations up. `input` measures channel 0 from the pooled validation median and
    names it; `local` measures each value from its channel's median over the window that scored it and names
    channel 1."""
    rng = np.random.default_rng(7)
    host = lambda level: (rng.standard_normal((1500, 2)) + np.array([level, 0.0])).astype(np.float32)  # noqa: E731
    tails, served, contrib = [host(0.0), host(100.0)], _Echo(), np.abs(rng.standard_normal((2000, 2)))
    local = fit_record("local", served, tails, 16, 4, 0, contrib)
    plain = fit_record("input", served, tails, 16, 4, 0, contrib)
    assert local["method"] == "local" and "center" not in local
    window = host(200.0)[:16]
    point = window[-1] = np.array([200.0, 6.0])
    names, even = ["level", "load"], np.ones(2)
    assert top_channels(attributed(even, plain, point), names, 2)[0]["name"] == "level"
    assert top_channels(attributed(even, local, point, window), names, 2)[0]["name"] == "load"
    # without the window (a caller that cannot give it): the contributions' ranking, never a crash
    assert np.array_equal(attributed(np.array([3.0, 1.0]), local, point), np.array([3.0, 1.0]))


def test_the_input_attribution_ranks_how_unusual_each_value_is_for_its_channel():
    """Channel 0 varies in the thousands, channel 1 in units, channel 2 in thousandths. A point with channel 0 up
    by 300 (ordinary for it) and channel 2 up by 0.05 (far outside its range) names channel 2 under `input`, whatever
    the contributions say; `joint` adds the contributions' own tail probabilities."""
    rng = np.random.default_rng(4)
    scale = np.array([1000.0, 1.0, 0.001])
    normal = (rng.standard_normal((2000, 3)) * scale + np.array([5000.0, 10.0, 0.5])).astype(np.float32)
    contrib = np.abs(rng.standard_normal((2000, 3)))  # an uninformative detector: every channel alike
    served, tails = _Echo(), [normal]
    record = fit_record("input", served, tails, 16, 4, 0, contrib)
    assert record["method"] == "input" and np.allclose(record["center"], np.median(normal[16 - 4:], axis=0), rtol=1e-3)
    point = np.median(normal, axis=0) + np.array([300.0, 0.0, 0.05])
    names = ["big", "unit", "tiny"]
    even = np.ones(3)
    assert top_channels(attributed(even, record, point), names, 3)[0]["name"] == "tiny"
    assert [c["name"] for c in top_channels(attributed(even, record, point), names, 3)] == ["tiny", "big", "unit"]
    joint = fit_record("joint", served, tails, 16, 4, 0, contrib)
    assert joint["method"] == "joint" and joint["input"] == record and joint["model"]["method"] == "quantile"
    loud_unit = np.array([0.5, 8.0, 0.5])  # channel 1's contribution far past anything on validation
    ranked = attributed(loud_unit, joint, point)
    assert np.allclose(ranked, attributed(loud_unit, joint["model"]) + attributed(loud_unit, record, point))
    assert top_channels(ranked, names, 3)[0]["name"] == "unit"  # each view can name a channel
    assert top_channels(attributed(even, joint, point), names, 3)[0]["name"] == "tiny"
    # without the point's values (a caller that cannot give them): the contributions' ranking, never a crash
    assert np.array_equal(attributed(loud_unit, record), loud_unit)
    assert np.allclose(attributed(loud_unit, joint), attributed(loud_unit, joint["model"]))
    with pytest.raises(ValueError, match="fit_record"):
        fit_attribution("input", contrib)
