"""POT/SPOT and the rolling percentile, checked against distributions whose quantiles are known analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.config import ThresholdConfig
from streamdet.errors import BundleError
from streamdet.pipeline.gpd import fit_gpd, log_likelihood
from streamdet.pipeline.percentile import RollingPercentile
from streamdet.pipeline.spot import REFIT_SHARE, Spot
from streamdet.pipeline.thresholds import ThresholdBank

from .helpers import exponential_calibration

TOLERANCE = 0.10  # relative error allowed on an estimated extreme quantile from 20k-50k samples


def decide_one(bank: ThresholdBank, entity: str, score: float, learn: bool = True) -> tuple[float, bool]:
    """A single score is a batch of one: -> (threshold it was judged against, over)."""
    thresholds, over = bank.decide([entity], np.array([[score]]), np.array([[learn]]))
    return float(thresholds[0, 0]), bool(over[0, 0])


def spot_one(spot: Spot, score: float) -> tuple[float, bool]:
    thresholds, over = spot.step(np.array([score]), np.array([True]), np.array([True]))
    return float(thresholds[0]), bool(over[0])


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
    z, over = spot_one(spot, before * 10)
    assert over and spot.n_peaks == n_peaks, "an alarm must not enter the peaks"
    for v in rng.exponential(2.0, 20_000):  # the normal scale doubles: the threshold must rise
        spot_one(spot, float(v))
    # it rises, but less than the new true quantile (2 ln 1000 = 13.8): protected alarms truncate the tail, the
    # price of an incident never raising its own threshold
    assert before * 1.03 < spot.z < 2 * math.log(1000)


def test_percentile_threshold_starts_from_calibration_adapts_down_and_resists_incidents():
    cal = exponential_calibration(4000)
    bank = ThresholdBank(ThresholdConfig(method="percentile", percentile=99.0), cal)
    start = bank.current("a")
    assert abs(start - np.quantile(cal["sample"], 0.99)) / start < 0.05
    for v in np.random.default_rng(4).exponential(0.3, 4000):  # a quieter entity: its threshold follows it down
        decide_one(bank, "a", float(v))
    quiet = bank.current("a")
    assert abs(quiet - 0.3 * -math.log(0.01)) / quiet < 0.15 and bank.current("b") == start
    for _ in range(500):  # an incident: alarms are clipped to the threshold, so they cannot raise it
        decide_one(bank, "a", 100.0)
    assert bank.current("a") <= quiet * 1.01


def test_warmup_points_never_count_as_over():
    bank = ThresholdBank(ThresholdConfig(warmup=5), exponential_calibration())
    assert [decide_one(bank, "a", 1e6)[1] for _ in range(5)] == [False] * 5
    assert decide_one(bank, "a", 1e6)[1] is True


def test_state_round_trip_gives_identical_thresholds():
    cal = exponential_calibration()
    a, b = ThresholdBank(ThresholdConfig(), cal), ThresholdBank(ThresholdConfig(), cal)
    rng = np.random.default_rng(5)
    a.decide(["e"], rng.exponential(size=(1, 3000)), np.ones((1, 3000), dtype=bool))
    b.load_state("e", a.state_dict("e"))
    tail = rng.exponential(1.5, 2000)
    assert [decide_one(a, "e", float(v)) for v in tail] == [decide_one(b, "e", float(v)) for v in tail]


def test_entities_start_from_their_own_copy_of_the_prototype():
    """A new entity's threshold is a copy (Spot.__deepcopy__): learning on one entity moves neither the prototype
    nor a later entity's start."""
    bank = ThresholdBank(ThresholdConfig(), exponential_calibration())
    start = bank._prototype.state_dict()
    rng = np.random.default_rng(6)
    bank.decide(["a"], rng.exponential(3.0, size=(1, 5000)), np.ones((1, 5000), dtype=bool))
    assert not same_detector(bank.state_dict("a")["detector"], start)  # "a" learned a wider tail
    assert same_detector(bank._prototype.state_dict(), start)
    bank.decide(["b"], np.zeros((1, 1)), np.zeros((1, 1), dtype=bool))
    assert same_detector(bank.state_dict("b")["detector"], start)


def test_calibration_without_what_the_method_needs_is_a_bundle_error():
    with pytest.raises(BundleError, match="percentile threshold needs validation scores"):
        ThresholdBank(ThresholdConfig(method="percentile"), {"pot": {}})
    with pytest.raises(BundleError, match="neither pot.peaks nor sample"):
        ThresholdBank(ThresholdConfig(method="pot"), {})


def same_detector(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
                                        for k in a)


def stream(seed: int, n: int):
    """(entities, scores, learn) of a stream that crosses refits, alarms, warm-up windows, non-finite scores and the
    end of warm-up, with several chunks of the same entity close together."""
    rng = np.random.default_rng(seed)
    entities = [f"e{k}" for k in rng.integers(0, 4, n)]
    scores = rng.exponential(1.5, n)  # a heavier tail than calibrated: peaks, refits and alarms all happen
    scores[rng.random(n) < 0.01] *= 40
    scores[rng.random(n) < 0.003] = np.nan
    learn = (rng.random(n) > 0.1) & np.isfinite(scores)
    return entities, scores, learn


class ReferenceBank:
    """The threshold rules written plainly, one score at a time (SPOT as in the paper, the rolling percentile, the
    warm-up): the oracle the batched path must match exactly."""

    def __init__(self, cfg: ThresholdConfig, cal: dict):
        self.cfg, self.cal, self.detectors, self.learned = cfg, cal, {}, {}

    def _detector(self, entity: str):
        if entity not in self.detectors:
            pot, cfg = self.cal["pot"], self.cfg
            self.detectors[entity] = (Spot(pot["init_threshold"], pot["peaks"], pot["n_init"], cfg.risk)
                                      if cfg.method == "pot" else RollingPercentile(self.cal["sample"], cfg.percentile))
            self.learned[entity] = 0
        return self.detectors[entity]

    def decide(self, entity: str, score: float, learn: bool) -> tuple[float, bool]:
        d = self._detector(entity)
        warming = self.learned[entity] < self.cfg.warmup
        adapt, protect = learn and self.cfg.update, not warming
        if isinstance(d, Spot):
            z = d.z
            over = score > z
            if adapt and not (over and protect):
                d.n += 1
                if score > d.t:
                    d.peaks.append(score - d.t)
                    d.n_peaks += 1
                    d.since_fit += 1
                    if d.since_fit >= max(d.refit_every, len(d.peaks) // REFIT_SHARE):
                        d.refit()
        else:
            z = d.threshold
            over = score > z
            if adapt:
                d._learn(min(score, z) if over and protect else score)
        self.learned[entity] += int(learn)
        return z, bool(over) and not warming


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(["pot", "percentile"]), warmup=st.sampled_from([0, 25]), seed=st.integers(0, 2**16),
       width=st.integers(1, 12), rows=st.integers(1, 40), update=st.booleans())
def test_batches_of_any_shape_decide_as_the_rules_one_score_at_a_time(method, warmup, seed, width, rows, update):
    """The one path, at any shape (a score alone is a batch of one; here batches of `rows` chunks of `width`
    scores, one entity per chunk, the same entity in several rows), equals the reference rules one score at a time:
    thresholds, verdicts and state. The stream crosses refits, alarms, warm-up windows, non-finite scores and the end
    of warm-up."""
    n = width * rows * 4
    entities, scores, learn = stream(seed, n // width)
    entities = [e for e in entities for _ in range(width)][:n]  # chunks: `width` consecutive scores per entity
    scores, learn = np.resize(scores, n), np.resize(learn, n)
    learn &= np.isfinite(scores)
    cfg = ThresholdConfig(method=method, warmup=warmup, update=update)
    cal = exponential_calibration()
    reference, batched, single = ReferenceBank(cfg, cal), ThresholdBank(cfg, cal), ThresholdBank(cfg, cal)
    want = [reference.decide(e, float(v), bool(lrn)) for e, v, lrn in zip(entities, scores, learn)]
    assert [decide_one(single, e, float(v), bool(lrn)) for e, v, lrn in zip(entities, scores, learn)] == want
    got_t, got_o = [], []
    for lo in range(0, n, width * rows):
        hi = min(lo + width * rows, n)
        t, o = batched.decide(entities[lo:hi:width], scores[lo:hi].reshape(-1, width),
                              learn[lo:hi].reshape(-1, width))
        got_t += t.ravel().tolist()
        got_o += o.ravel().tolist()
    assert got_t == [t for t, _ in want] and got_o == [o for _, o in want]
    for entity in set(entities):
        assert same_detector(batched.state_dict(entity)["detector"], reference.detectors[entity].state_dict())
        assert batched.state_dict(entity)["learned"] == reference.learned[entity]


def test_spot_threshold_moves_only_at_refits_and_alarms_never_teach_it():
    """Properties of SPOT's one path: within a chunk z_q changes only right after a refit (every refit_due new
    peaks), warm-up points and alarms are never peaks, and the counts add up."""
    spot = Spot(**{k: v for k, v in zip(("init_threshold", "peaks", "n_init"), (1.0, [0.5] * 200, 5000))}, risk=1e-3)
    rng = np.random.default_rng(3)
    scores = 1.0 + rng.exponential(0.8, 3000)
    scores[::97] = 1e6  # alarms
    learn = rng.random(3000) > 0.2
    before_n, before_peaks = spot.n, spot.n_peaks
    thresholds, over = spot.step(scores, learn, np.ones(3000, dtype=bool))
    changes = np.flatnonzero(np.diff(thresholds))
    assert 3 <= changes.size < 300  # refits happened, and far fewer than one per point
    assert over[::97].all() and spot.n - before_n == int((learn & ~over).sum())
    assert spot.n_peaks - before_peaks == int((learn & ~over & (scores > spot.t)).sum())
    assert max(spot.peaks) < 1e6 - spot.t  # no alarm in the peaks


def stored_calibration(seed: int) -> dict:
    """A bundle's calibration as training writes it (train/calibration.py): POT peaks with their stored GPD fit."""
    from streamdet.train.calibration import calibrate

    return calibrate(np.random.default_rng(seed).gamma(2.0, 1.5, 5000), 0.98)


def decisions(bank: ThresholdBank, seed: int) -> tuple[np.ndarray, np.ndarray]:
    entities, scores, learn = stream(seed, 3000)
    out = [bank.decide([e], np.array([[s]]), np.array([[ok]])) for e, s, ok in zip(entities, scores, learn)]
    return np.array([t[0, 0] for t, _ in out]), np.array([o[0, 0] for _, o in out])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stored_gpd_fit_gives_exactly_the_thresholds_of_a_fit_made_at_start(seed):
    """Training stores the GPD fit of the calibration's peaks; the daemon starts each Spot from it instead of
    fitting again, and every threshold and verdict is the same as with the fit made here."""
    cal = stored_calibration(seed)
    assert cal["pot"]["gpd"]["method"] != "exponential"  # a real maximum-likelihood fit is stored
    refit = {**cal, "pot": {k: v for k, v in cal["pot"].items() if k != "gpd"}}
    cfg = ThresholdConfig(warmup=20)
    stored_bank, refit_bank = ThresholdBank(cfg, cal), ThresholdBank(cfg, refit)
    assert stored_bank._prototype.state_dict().keys() == refit_bank._prototype.state_dict().keys()
    assert same_detector(stored_bank._prototype.state_dict(), refit_bank._prototype.state_dict())
    got, want = decisions(stored_bank, seed), decisions(refit_bank, seed)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_stored_fit_is_used_only_when_it_is_this_versions_fit_of_these_peaks():
    from streamdet.pipeline import gpd

    cal = stored_calibration(4)
    fitted_here = ThresholdBank(ThresholdConfig(), {**cal, "pot": {**cal["pot"], "gpd": None}})._prototype.z
    wider = {**cal["pot"]["gpd"], "sigma": 2 * cal["pot"]["gpd"]["sigma"]}
    assert ThresholdBank(ThresholdConfig(), {**cal, "pot": {**cal["pot"], "gpd": wider}})._prototype.z > fitted_here
    for stale in ({**wider, "version": gpd.FIT_VERSION + 1}, {**wider, "n": wider["n"] + 1}, {**wider, "sigma": -1},
                  {"gamma": "x"}):
        assert ThresholdBank(ThresholdConfig(), {**cal, "pot": {**cal["pot"], "gpd": stale}})._prototype.z == \
            fitted_here


def test_prepare_builds_every_bundles_threshold_before_any_score(monkeypatch):
    """A bank of per-entity bundles builds each bundle's starting threshold at `prepare` (start-up, reload): the
    first scores of a thousand entities then fit nothing. Calibrations without a stored fit are fitted there."""
    from streamdet.pipeline import spot

    calibrations = {f"k{i}": exponential_calibration(seed=i) for i in range(5)}  # no stored fit: fitted at prepare
    fits = []
    monkeypatch.setattr(spot, "fit_gpd", lambda y: fits.append(len(y)) or fit_gpd(y))
    bank = ThresholdBank(ThresholdConfig(), calibrations["k0"], lambda e: (f"k{e[1:]}", calibrations[f"k{e[1:]}"]))
    bank.prepare(calibrations.items())
    assert len(fits) == 1 + len(calibrations)  # the shared prototype and one per bundle
    fits.clear()
    bank.decide([f"e{i}" for i in range(5)], np.zeros((5, 3)), np.ones((5, 3), dtype=bool))
    assert fits == []
    assert [bank.current(f"e{i}") for i in range(5)] == [bank._prototypes[f"k{i}"].z for i in range(5)]
    bank.prepare([("k1", calibrations["k1"]), ("k9", calibrations["k2"])])  # a reload: k1 kept, k9 new, others gone
    assert bank.prepared == {"k1", "k9"} and len(fits) == 1


def test_resolve_levels_refuse_a_calibration_without_scores_when_built():
    """alerting.resolve_quantile needs each served bundle's validation scores: a bundle without them is refused
    when the levels are built (start-up, reload), never while a batch is being handled."""
    from streamdet.pipeline.thresholds import ResolveLevels

    good = exponential_calibration()
    levels = ResolveLevels(0.9, lambda entity: ("g", good), [("g", good)])
    assert levels("any") == pytest.approx(np.quantile(good["sample"], 0.9))
    with pytest.raises(BundleError, match="calibration.sample is empty"):
        ResolveLevels(0.9, lambda entity: ("g", good), [("g", good), ("bad", {"pot": good["pot"]})])
