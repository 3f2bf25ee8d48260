"""Score engineering (model.score): per-channel error normalisation, several windows at once, per-entity online
standardisation, each on real fitted detectors, a real exported bundle and the real pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.data.series import Series
from streamdet.errors import ConfigError
from streamdet.evaluate.backtest import replay_entity
from streamdet.evaluate.vus import auc_roc
from streamdet.pipeline.standardise import ScoreStandardiser, make_prior, standardise_stream
from streamdet.train import train_bundle, train_model
from streamdet.train.calibration import daemon_like_scores, first_scored_row, scored_start
from streamdet.train.candidates import ScoreSettings, parse_candidate
from streamdet.train.engineering import MultiWindow, engineer

from ..conftest import SMD_CONFIG

BASE = ["data.dataset=synthetic", "model.window=16", "train.epochs=1", "train.device=cpu", "model.preset=tiny",
        "scoring.stride=4"]


def loud_and_quiet(n: int = 3000, seed: int = 0) -> Series:
    """Two independent noise channels, one 100x louder than the other; the test split has spikes on the quiet one
    only, 20x its own noise but a fifth of the loud channel's."""
    rng = np.random.default_rng(seed)
    def rows(k):
        return np.stack([10.0 * rng.standard_normal(k), 0.1 * rng.standard_normal(k)], axis=1).astype(np.float32)

    test, labels = rows(n), np.zeros(n, np.int8)
    for start in range(200, n - 50, 250):
        test[start:start + 5, 1] += 2.0
        labels[start:start + 5] = 1
    return Series("loud-quiet", ["loud", "quiet"], rows(n), test, labels)


def test_channel_normalisation_finds_a_quiet_channels_anomaly_that_the_loud_channel_drowns():
    cfg = load_config(SMD_CONFIG, BASE)
    series = loud_and_quiet()
    base = train_model(cfg, [series], "knn", normalisation="none", progress=False)

    def test_auc(trained):
        scores = daemon_like_scores(trained.served, series.test, trained.window, 4, trained.context)
        start = scored_start(len(series.test), trained.window, 4, trained.context)
        return auc_roc(series.test_labels[start:start + len(scores)], scores)

    plain = test_auc(engineer(base, ScoreSettings(), None, 4))
    normalised = test_auc(engineer(base, ScoreSettings(channel_norm=True), None, 4))
    assert plain < 0.75 and normalised > 0.95, (plain, normalised)


def test_several_windows_average_each_ones_rank_on_its_validation_scores_and_keep_the_tails_order():
    cfg = load_config(SMD_CONFIG, BASE + ["data.synthetic_entities=1", "data.synthetic_length=2000",
                                          "data.synthetic_channels=3"])
    from streamdet.data import load_series

    series = load_series(cfg)
    fits = {}

    def fit(window):
        fits[window] = fits.get(window) or train_model(cfg, series, "pca", window=window, progress=False)
        return fits[window]

    combined = engineer(fit(16), ScoreSettings(windows=(8,)), fit, 4)
    model = combined.model
    assert isinstance(model, MultiWindow) and combined.window == 16 and model.lengths == [16, 8]
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 16, 3)).astype(np.float32))
    out, contrib = model(x)
    expected = []
    for i, length in enumerate(model.lengths):  # numpy's own piecewise-linear interpolation of the knots
        raw, _ = model.models[i](x[:, 16 - length:])
        raw = raw[:, length - 8:].numpy().astype(np.float64)
        knots = model.knots[i].numpy().astype(np.float64)
        expected.append(np.interp(raw, knots, np.linspace(0, 1, len(knots)), left=0.0, right=np.nan))
        past = raw > knots[-1]  # past the last knot: 1 + distance in units of (max - median) of the knots
        expected[-1][past] = 1 + (raw[past] - knots[-1]) / (knots[-1] - knots[len(knots) // 2])
    np.testing.assert_allclose(out[:, 8:].numpy(), np.mean(expected, axis=0), rtol=1e-4, atol=1e-5)
    huge = model(x * 50)[0][:, -1]
    assert (huge > 1.0).all() and len(set(huge.tolist())) == 3  # far past validation: still ordered, not clipped
    assert contrib.shape == x.shape
    assert parse_candidate("pca windows=[8,32]").windows == (8, 32)
    with pytest.raises(ConfigError, match="windows"):
        load_config(SMD_CONFIG, BASE + ["model.score.windows=[1]"])


def test_standardiser_starts_at_the_calibration_and_brings_a_higher_entity_back_to_its_scale():
    prior = {"mean": 1.0, "std": 0.5, "clip": 2.5, "horizon": 200}
    rng = np.random.default_rng(0)
    calm = 1.0 + 0.5 * rng.standard_normal(20)
    np.testing.assert_allclose(standardise_stream(prior, calm, 5)[:5], calm[:5])  # a new entity: as calibrated
    busy = 10.0 + 0.5 * rng.standard_normal(3000)  # an entity at ten times the level, same spread
    # it never teaches while its outputs sit over the clip: only points judged normal teach
    assert (standardise_stream(prior, busy, 5) > prior["clip"]).all()
    loose = dict(prior, clip=np.inf)
    out = standardise_stream(loose, busy, 5)
    assert abs(out[-500:].mean() - 1.0) < 0.2 and abs(out[-500:].std() - 0.5) < 0.15
    spiked = busy.copy()
    spiked[-10] += 5.0
    assert standardise_stream(loose, spiked, 5)[-10] > 1.0 + 5 * 0.5  # an anomaly on top still stands out


def test_standardiser_state_survives_a_checkpoint():
    prior = {"mean": 1.0, "std": 0.5, "clip": 10.0, "horizon": 100}
    scores = np.random.default_rng(2).random((1, 300)) * 4
    one = ScoreStandardiser(lambda _: prior)
    whole = np.concatenate([one.apply(["e"], scores[:, i:i + 10], np.ones((1, 10), bool)) for i in range(0, 300, 10)],
                           axis=1)
    first = ScoreStandardiser(lambda _: prior)
    for i in range(0, 150, 10):
        first.apply(["e"], scores[:, i:i + 10], np.ones((1, 10), bool))
    second = ScoreStandardiser(lambda _: prior)
    second.load_state("e", first.state_dict("e"))
    rest = np.concatenate([second.apply(["e"], scores[:, i:i + 10], np.ones((1, 10), bool))
                           for i in range(150, 300, 10)], axis=1)
    np.testing.assert_allclose(rest, whole[:, 150:])


def test_the_pipeline_standardises_exactly_as_calibration_did(tmp_path):
    """One code path: a bundle trained with model.score.standardise carries the prior; the replayed pipeline's
    scores are the raw model scores passed through standardise_stream, and without the prior they are raw."""
    cfg = load_config(SMD_CONFIG, BASE + ["data.synthetic_entities=1", "data.synthetic_length=2000",
                                          "data.synthetic_channels=3", "model.name=pca",
                                          "model.score.standardise=true", f"model.bundle={tmp_path / 'b.pt'}",
                                          "scoring.adaptive=false"])
    bundle = train_bundle(cfg, progress=False)
    prior = bundle.calibration["standardise"]
    assert prior == make_prior(_raw_validation_scores(cfg))
    from streamdet.data import load_series

    rows = load_series(cfg)[0].test[:600].astype(np.float32)
    served = replay_entity(cfg, bundle, "e", rows)
    loaded = load_bundle(tmp_path / "b.pt")
    calibration = {k: v for k, v in loaded.calibration.items() if k != "standardise"}
    plain = dataclasses.replace(loaded, meta={**loaded.meta, "calibration": calibration})
    raw = replay_entity(cfg, plain, "e", rows)
    assert np.isfinite(raw.scores).all()
    warm = first_scored_row(16, 4)  # edge-padded warm-up windows are scored as calibrated and teach nothing
    np.testing.assert_allclose(served.scores[:warm], raw.scores[:warm], rtol=1e-6)
    np.testing.assert_allclose(served.scores[warm:], standardise_stream(prior, raw.scores[warm:], 4), rtol=1e-6)
    assert not np.allclose(served.scores, raw.scores)


def _raw_validation_scores(cfg) -> np.ndarray:
    """The trained bundle's validation scores, recomputed the way training does before standardising."""
    from streamdet.data import load_series
    from streamdet.train.core import validation_scores

    trained = train_model(cfg, load_series(cfg), "pca", progress=False)
    return np.concatenate(validation_scores(trained, cfg.scoring.stride))


def test_auto_ranks_engineered_candidates_and_the_bundle_records_the_chosen_settings(tmp_path):
    cfg = load_config(SMD_CONFIG, BASE + ["data.synthetic_entities=1", "data.synthetic_length=2000",
                                          "data.synthetic_channels=3", "model.name=auto",
                                          "model.auto_candidates=[pca, pca channel_norm=true smooth=4]",
                                          "model.score.standardise=true", "model.auto_ensemble=0",
                                          f"model.bundle={tmp_path / 'a.pt'}"])
    bundle = train_bundle(cfg, progress=False)
    training = bundle.meta["training"]
    chosen = parse_candidate(training["selection"]["chosen"])
    assert {e["candidate"] for e in training["selection"]["ranking"]} == {"pca", "pca channel_norm=true smooth=4"}
    assert training["score"] == {"channel_norm": bool(chosen.channel_norm), "smooth": chosen.smooth or 0,
                                 "windows": [], "standardise": True}  # inherited from model.score
    assert "standardise" in bundle.calibration


def test_a_checkpointed_entity_resumes_its_standardisation_in_a_new_pipeline():
    """engine.Pipeline carries the standardiser's state in state_dict/load_state: a second pipeline restored
    mid-stream scores the rest exactly as the first; without the state it would restart at the prior."""
    from streamdet.pipeline.engine import Pipeline
    from streamdet.pipeline.settings import PipelineSettings
    from streamdet.types import Source

    from ..pipeline.helpers import DeviationDetector, FakeBundle, exponential_calibration, record

    calibration = {**exponential_calibration(), "standardise": {"mean": 0.2, "std": 0.1, "clip": 1e9, "horizon": 20}}
    cfg = load_config(SMD_CONFIG, ["scoring.stride=4", "scoring.max_batch=1", "scoring.adaptive=false"])

    def pipeline():
        bundle = FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), 8, calibration)
        return Pipeline(PipelineSettings.of(cfg), bundle, lambda: 0.0, overlap=False)

    def items(start, n):
        return [(record("e", 1000.0 + i, np.full(3, np.sin(i / 3.0) * (1 + i / 20))), Source("m", 0, i))
                for i in range(start, start + n)]

    a, b, fresh = pipeline(), pipeline(), pipeline()
    a.process(items(0, 40))
    a.flush_batches()
    state = a.state_dict("e")
    assert set(state["standardise"]) == {"mean", "square"}
    b.load_state("e", state)
    fresh.load_state("e", {k: v for k, v in state.items() if k != "standardise"})
    rest = items(40, 20)
    scores = [[s.score for s in [*p.process(rest).points(), *p.drain().points()]] for p in (a, b, fresh)]
    assert len(scores[0]) == 20 and scores[0] == scores[1]
    assert not np.allclose(scores[0], scores[2])
