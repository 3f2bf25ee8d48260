"""POT/SPOT and the rolling percentile, checked against distributions whose quantiles are known analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamdet.config import ThresholdConfig
from streamdet.errors import BundleError
from streamdet.pipeline.gpd import fit_gpd, log_likelihood
from streamdet.pipeline.thresholds import Spot, ThresholdBank

from .helpers import exponential_calibration

TOLERANCE = 0.10  # relative error allowed on an estimated extreme quantile from 20k-50k samples


def gpd_samples(rng, gamma: float, sigma: float, n: int) -> np.ndarray:
    u = rng.random(n)
    return sigma / gamma * (u ** (-gamma) - 1.0)  # inverse CDF of GPD(gamma, sigma)


@pytest.mark.parametrize("gamma, sigma", [(0.2, 1.0), (0.1, 2.0)])
def test_grimshaw_recovers_a_known_gpd(gamma, sigma):
    fit = fit_gpd(gpd_samples(np.random.default_rng(1), gamma, sigma, 5000))
    assert abs(fit.gamma - gamma) < 0.06 and abs(fit.sigma - sigma) / sigma < 0.08


def profile_maximum(y: np.ndarray) -> tuple[float, float]:
    """(the GPD log-likelihood maximised by brute force over γ > -1, the γ there): Grimshaw's profile at 200,000
    values of x = γ/σ."""
    best, best_gamma = log_likelihood(y, 0.0, float(y.mean())), 0.0
    for xs in (-np.linspace(1e-9, 1.0 - 1e-9, 100_000) / y.max(), np.geomspace(1e-9, 1e4, 100_000) / y.max()):
        logs = np.log1p(xs[:, None] * y[None, :])  # [X, N]
        gamma = logs.mean(axis=1)
        sigma = gamma / xs
        ll = -y.size * np.log(sigma) - (1.0 + 1.0 / gamma) * logs.sum(axis=1)
        ll[~((sigma > 0) & (gamma > -1.0) & np.isfinite(ll))] = -np.inf  # γ <= -1: unbounded, not a maximum
        i = int(np.argmax(ll))
        if ll[i] > best:
            best, best_gamma = float(ll[i]), float(gamma[i])
    return best, best_gamma


@pytest.mark.parametrize("gamma, n, seed", [
    (-0.4, 20, 1), (-0.4, 20, 2), (-0.4, 20, 11), (-0.3, 30, 2), (-0.2, 15, 2), (-0.2, 15, 11),
    (-0.5, 40, 1), (-0.5, 40, 7), (0.3, 15, 1), (0.3, 15, 3), (0.1, 200, 0), (0.1, 200, 1)])
def test_grimshaw_finds_the_maximum_likelihood(gamma, n, seed):
    """Small samples from a bounded tail put the likelihood's maximum near x = -1/max(y); a root grid that is coarse
    there misses it and settles for the exponential fit (the first eight cases did, with the former grid)."""
    y = gpd_samples(np.random.default_rng(seed), gamma, 1.0, n)
    best, best_gamma = profile_maximum(y)
    assert -0.99 < best_gamma < 1.0  # an interior maximum inside GAMMA_RANGE exists (the samples were chosen so)
    fit = fit_gpd(y)
    assert log_likelihood(y, fit.gamma, fit.sigma) >= best - 1e-6 * abs(best), (fit, best_gamma)


@pytest.mark.parametrize("risk", [1e-3, 1e-4])
def test_pot_quantile_of_an_exponential_matches_the_analytic_one(risk):
    """Exp(1): P(X > z) = risk  <=>  z = -ln(risk)."""
    scores = np.random.default_rng(0).exponential(size=50_000)
    t = float(np.quantile(scores, 0.98))
    spot = Spot(t, scores[scores > t] - t, len(scores), risk)
    true = -math.log(risk)
    assert abs(spot.z - true) / true < TOLERANCE, (spot.z, true)


def test_pot_quantile_of_a_pareto_tail():
    """Lomax/GPD(0.25, 1) scores: the true 1e-3 quantile is (risk^-gamma - 1) sigma / gamma."""
    rng = np.random.default_rng(2)
    scores = gpd_samples(rng, 0.25, 1.0, 50_000)
    t = float(np.quantile(scores, 0.98))
    spot = Spot(t, scores[scores > t] - t, len(scores), 1e-3)
    true = (1e-3 ** -0.25 - 1.0) / 0.25
    assert abs(spot.z - true) / true < 0.15, (spot.z, true)


def test_online_updates_follow_a_shifted_scale_and_alarms_are_not_learned():
    rng = np.random.default_rng(3)
    cal = exponential_calibration(4000)
    spot = Spot(cal["pot"]["init_threshold"], cal["pot"]["peaks"], cal["n"], 1e-3)
    before = spot.z
    n_peaks = spot.n_peaks
    z, over = spot.step(before * 10, learn=True, protect=True)
    assert over and spot.n_peaks == n_peaks, "an alarm must not enter the peaks"
    for v in rng.exponential(2.0, 20_000):  # the normal scale doubles: the threshold must rise
        spot.step(float(v), learn=True, protect=True)
    # it rises, but less than the new true quantile (2 ln 1000 = 13.8): protected alarms truncate the tail, the
    # price of an incident never raising its own threshold
    assert before * 1.03 < spot.z < 2 * math.log(1000)


def test_percentile_threshold_starts_from_calibration_adapts_down_and_resists_incidents():
    cal = exponential_calibration(4000)
    bank = ThresholdBank(ThresholdConfig(method="percentile", percentile=99.0), cal)
    start = bank.current("a")
    assert abs(start - np.quantile(cal["sample"], 0.99)) / start < 0.05
    for v in np.random.default_rng(4).exponential(0.3, 4000):  # a quieter entity: its threshold follows it down
        bank.update("a", float(v))
    quiet = bank.current("a")
    assert abs(quiet - 0.3 * -math.log(0.01)) / quiet < 0.15 and bank.current("b") == start
    for _ in range(500):  # an incident: alarms are clipped to the threshold, so they cannot raise it
        bank.update("a", 100.0)
    assert bank.current("a") <= quiet * 1.01


def test_warmup_points_never_count_as_over():
    bank = ThresholdBank(ThresholdConfig(warmup=5), exponential_calibration())
    assert [bank.update("a", 1e6)[1] for _ in range(5)] == [False] * 5
    assert bank.update("a", 1e6)[1] is True


def test_state_round_trip_gives_identical_thresholds():
    cal = exponential_calibration()
    a, b = ThresholdBank(ThresholdConfig(), cal), ThresholdBank(ThresholdConfig(), cal)
    rng = np.random.default_rng(5)
    for v in rng.exponential(size=3000):
        a.update("e", float(v))
    b.load_state("e", a.state_dict("e"))
    tail = rng.exponential(1.5, 2000)
    assert [a.update("e", float(v)) for v in tail] == [b.update("e", float(v)) for v in tail]


def test_calibration_without_what_the_method_needs_is_a_bundle_error():
    with pytest.raises(BundleError, match="percentile threshold needs validation scores"):
        ThresholdBank(ThresholdConfig(method="percentile"), {"pot": {}})
    with pytest.raises(BundleError, match="neither pot.peaks nor sample"):
        ThresholdBank(ThresholdConfig(method="pot"), {})


@pytest.mark.parametrize("method", ["pot", "percentile"])
@pytest.mark.parametrize("warmup", [0, 25])
def test_update_many_equals_point_by_point(method, warmup):
    """Chunks of 10 cross refits, the end of warm-up and alarms; thresholds and verdicts must match exactly."""
    rng = np.random.default_rng(7)
    scores = rng.exponential(1.0, 600)
    scores[rng.choice(600, 12, replace=False)] *= 40  # alarms that must stay out of the peaks
    cfg = ThresholdConfig(method=method, warmup=warmup)
    chunked, single = ThresholdBank(cfg, exponential_calibration()), ThresholdBank(cfg, exponential_calibration())
    got = [chunked.update_many("e", scores[i:i + 10], learn=(i // 10) % 7 != 3) for i in range(0, 600, 10)]
    want = [single.update("e", float(s), learn=(i // 10) % 7 != 3) for i, s in enumerate(scores)]
    assert np.concatenate([t for t, _ in got]).tolist() == [t for t, _ in want]
    assert np.concatenate([o for _, o in got]).tolist() == [o for _, o in want]
    assert any(o for _, o in want)
    assert chunked.state_dict("e")["learned"] == single.state_dict("e")["learned"]
    a, b = chunked.state_dict("e")["detector"], single.state_dict("e")["detector"]
    assert all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("method", ["pot", "percentile"])
@pytest.mark.parametrize("warmup", [0, 25])
def test_update_rows_equals_update_many_row_by_row(method, warmup):
    """A scored batch holds several chunks of the same entity, refits, alarms, warm-up windows and the end of
    warm-up: the batch path must give the same thresholds, verdicts and state as update_many in row order."""
    rng = np.random.default_rng(11)
    entities = [f"e{k}" for k in rng.integers(0, 4, 240)]
    scores = rng.exponential(1.5, (240, 10))  # a heavier tail than calibrated: peaks, refits and alarms all happen
    scores[rng.random((240, 10)) < 0.01] *= 40
    learn = (rng.random(240) > 0.1).tolist()
    cfg = ThresholdConfig(method=method, warmup=warmup)
    batched, rows = ThresholdBank(cfg, exponential_calibration()), ThresholdBank(cfg, exponential_calibration())
    got = [batched.update_rows(entities[i:i + 40], scores[i:i + 40], learn[i:i + 40]) for i in range(0, 240, 40)]
    want = [rows.update_many(e, scores[b], learn[b]) for b, e in enumerate(entities)]
    assert np.concatenate([t for t, _ in got]).tolist() == np.stack([t for t, _ in want]).tolist()
    assert np.concatenate([o for _, o in got]).tolist() == np.stack([o for _, o in want]).tolist()
    assert any(o.any() for _, o in want)
    for entity in set(entities):
        a, b = batched.state_dict(entity), rows.state_dict(entity)
        assert a["learned"] == b["learned"]
        a, b = a["detector"], b["detector"]
        assert all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)
