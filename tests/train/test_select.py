"""model.name auto: candidates ranked on validation tails with injected anomalies, never on test labels."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

import streamdet.train as train_pkg
from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.data import load_series
from streamdet.errors import ConfigError
from streamdet.train import train_bundle
from streamdet.train.inject import KINDS, channel_spread, inject
from streamdet.train.candidates import parse_candidate
import streamdet.train.select as select
from streamdet.train.select import make_injections, rank
from streamdet.train.splits import split_point

from ..conftest import SMD_CONFIG

CANDIDATES = "[pca, knn normalisation=none, robust_z window=16]"
AUTO = ["data.dataset=synthetic", "data.synthetic_entities=2", "data.synthetic_length=2000",
        "data.synthetic_channels=4", "model.name=auto", "model.preset=tiny", "model.window=24", "train.epochs=1",
        "train.device=cpu", f"model.auto_candidates={CANDIDATES}"]


def test_candidate_specs_split_training_settings_from_model_params():
    c = parse_candidate("knn window=32 normalisation=none span=5")
    assert (c.name, c.window, c.normalisation, c.params) == ("knn", 32, "none", {"span": 5})
    with pytest.raises(ConfigError, match="auto_candidates"):
        parse_candidate("knn span")
    with pytest.raises(ConfigError, match="model.auto_candidates: 'knnn'"):
        load_config(SMD_CONFIG, ["model.name=auto", "model.auto_candidates=[pca, knnn]"])


def test_every_kind_is_injected_inside_its_labels_and_sized_from_the_tails_own_scale():
    rng = np.random.default_rng(0)
    t = np.arange(3000)[:, None]
    tail = np.sin(t / 20.0 + np.arange(4)) + 0.1 * rng.standard_normal((3000, 4))
    tail[:, 1] = 2 * tail[:, 0] + 0.05 * rng.standard_normal(3000)  # a correlated pair to break
    made = inject(tail, seed=1, margin=100, count=len(KINDS))
    assert [k for _, _, k, _ in made.segments] == list(KINDS) and made.labels[:100].sum() == 0
    changed = np.abs(made.values - tail).max(axis=1) > 1e-6
    assert not changed[made.labels == 0].any()  # nothing outside a labelled segment moves
    for start, end, kind, channels in made.segments:
        assert changed[start:end].any(), kind
    big = inject(tail * 1e6 + 5e9, seed=1, margin=100, count=len(KINDS))  # bytes instead of units: the same anomalies, scaled
    np.testing.assert_array_equal(big.labels, made.labels)
    np.testing.assert_allclose((big.values - (tail * 1e6 + 5e9)) / 1e6, made.values - tail, atol=1e-2)
    np.testing.assert_allclose(channel_spread(tail * 1e6), channel_spread(tail) * 1e6, rtol=1e-6)


def test_default_injection_covers_about_five_percent_of_the_rows_and_copies_rotate_kinds():
    tail = np.random.default_rng(2).standard_normal((4000, 3))
    made = inject(tail, seed=0, margin=100)
    assert 0.02 < made.labels.mean() < 0.08
    other = inject(tail, seed=0, margin=100, first_kind=len(made.segments))
    assert made.segments[0][2] != other.segments[0][2]


def test_a_short_tail_gets_copies_enough_for_every_kind_twice():
    tail = np.random.default_rng(3).standard_normal((800, 3))  # one anomaly per copy at this length
    made = make_injections([tail], seed=0, margin=100)
    drawn = [kind for copy in made.kinds for kind in copy]
    assert all(len(copy) == 1 for copy in made.kinds)
    assert {kind: drawn.count(kind) for kind in KINDS} == {kind: select.KIND_REPEATS for kind in KINDS}


def test_every_injected_copy_is_its_own_draw(monkeypatch):
    """Short tails get 14 copies each; the 11th and later once took the next tail's seeds (the same draw twice)."""
    seeds, real_inject = [], select.inject

    def spy(tail, seed, **kwargs):
        seeds.append(seed)
        return real_inject(tail, seed=seed, **kwargs)

    monkeypatch.setattr(select, "inject", spy)
    tails = [np.random.default_rng(i).standard_normal((800, 3)) for i in range(3)]
    made = make_injections(tails, seed=0, margin=100)
    assert len(made.values) == len(seeds) == 3 * 14
    assert len(set(seeds)) == len(seeds)
    first = set(seeds)
    make_injections(tails, seed=select.SECOND_DRAW, margin=100)  # the draw that judges the ensemble
    assert not first & set(seeds[len(first):])


def test_candidates_are_ranked_on_rows_that_none_of_them_was_fitted_on(tmp_path, monkeypatch):
    """Every fit of the ranking leaves out the ranking rows (channel_norm's scales, lstm_ae's error model and early
    stopping fit on validation windows: scored on those rows, they looked better than they were); the training heads
    are the ones the chosen model is finally trained on, and that final fit sees the whole train split."""
    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'h.pt'}",
                                          "model.auto_candidates=[pca channel_norm=true, knn]"])
    fits, injected = [], []
    real_fit, real_inject = select.fit_candidate, select.make_injections

    def spy_fit(c, series, *args, **kwargs):
        fits.append((c.train.val_fraction, [s.train.copy() for s in series]))
        return real_fit(c, series, *args, **kwargs)

    def spy_inject(tails, *args):
        injected.extend(t.copy() for t in tails)
        return real_inject(tails, *args)

    monkeypatch.setattr(select, "fit_candidate", spy_fit)
    monkeypatch.setattr(select, "make_injections", spy_inject)
    train_bundle(cfg, progress=False)
    full = load_series(cfg)
    ranking_fits = [f for f in fits if f[0] != cfg.train.val_fraction]
    finals = [trains for fraction, trains in fits if fraction == cfg.train.val_fraction]
    assert len(ranking_fits) == 2 and finals and len(fits) == 2 + len(finals)
    for i, (whole, tail) in enumerate(zip(full, injected)):
        for trains in finals:
            np.testing.assert_array_equal(trains[i], whole.train)
        assert 0 < len(tail) < len(whole.train) * cfg.train.val_fraction
        np.testing.assert_array_equal(tail, whole.train[-len(tail):])
        head = split_point(len(whole.train), cfg.model.window, cfg.train.val_fraction, whole.entity)
        for fraction, trains in ranking_fits:
            seen = trains[i]
            np.testing.assert_array_equal(seen[:head], whole.train[:head])
            assert len(seen) == len(whole.train) - len(tail)  # the ranking rows are in no fit
            assert split_point(len(seen), cfg.model.window, fraction, whole.entity) == head


def test_a_train_split_too_short_to_hold_rows_out_is_ranked_on_its_validation_tails(tmp_path, caplog):
    """A short NAB file keeps working: auto falls back to the tails it fitted on, says so, and records it."""
    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 's.pt'}", "model.window=60",
                                          "model.auto_candidates=[pca, robust_z]"])
    with caplog.at_level(logging.WARNING, logger="streamdet.train.select"):
        bundle = train_bundle(cfg, progress=False)
    selection = bundle.meta["training"]["selection"]
    assert selection["held_out"] is False and "too short to hold ranking rows out" in caplog.text
    tail = len(load_series(cfg)[0].train) - split_point(len(load_series(cfg)[0].train), 60, cfg.train.val_fraction, "x")
    assert selection["ranking_rows"] == [tail, tail] and np.isfinite(selection["ranking"][0]["vus_pr"])
    wide = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'w.pt'}", "model.auto_candidates=[pca]"])
    assert train_bundle(wide, progress=False).meta["training"]["selection"]["held_out"] is True


def test_ranking_puts_failed_and_unscored_candidates_last():
    entries = [{"candidate": "a", "vus_pr": 0.5, "auc_pr": 0.1}, {"candidate": "b", "error": "x"},
               {"candidate": "c", "vus_pr": 0.5, "auc_pr": 0.3}, {"candidate": "d", "vus_pr": float("nan")}]
    assert [e["candidate"] for e in rank(entries)][:2] == ["c", "a"]
    assert {e["candidate"] for e in rank(entries)[2:]} == {"b", "d"}


def scrambled(series_list):
    """The same series with the test split and its labels replaced by noise: what auto may not look at."""
    rng = np.random.default_rng(7)
    return [dataclasses.replace(s, test=rng.random(s.test.shape).astype(np.float32),
                                test_labels=rng.integers(0, 2, len(s.test_labels)).astype(np.int8))
            for s in series_list]


def test_auto_chooses_on_validation_only_and_records_the_ranking(tmp_path, monkeypatch, caplog):
    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'a.pt'}"])
    with caplog.at_level(logging.INFO, logger="streamdet.train.select"):
        first = train_bundle(cfg, progress=False)
    selection = load_bundle(tmp_path / "a.pt").meta["training"]["selection"]
    ranking = [(e["candidate"], round(e["vus_pr"], 9)) for e in selection["ranking"]]
    mixed = selection["ensemble"]["chosen"]
    assert len(ranking) == 3 and selection["chosen"] == ("ensemble" if mixed else ranking[0][0])
    assert first.model_name == ("ensemble" if mixed else parse_candidate(ranking[0][0]).name)
    assert selection["kinds"] == list(KINDS)
    assert f"auto: chose {selection['chosen']}" in caplog.text
    vus = [v for _, v in ranking]
    assert vus == sorted(vus, reverse=True) and 0 < vus[-1] <= vus[0] <= 1

    real = load_series  # the same run with every test value and label scrambled must choose the same way
    monkeypatch.setattr(train_pkg, "load_series", lambda c, e=None: scrambled(real(c, e)))
    cfg2 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, bundle=str(tmp_path / "b.pt")))
    train_bundle(cfg2, progress=False)
    again = load_bundle(tmp_path / "b.pt").meta["training"]["selection"]
    assert [(e["candidate"], round(e["vus_pr"], 9)) for e in again["ranking"]] == ranking


def test_a_smoothed_candidate_is_exported_with_its_context_and_averages_the_inner_scores(tmp_path):
    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 's.pt'}", "model.auto_candidates=[pca smooth=4]"])
    bundle = train_bundle(cfg, progress=False)
    assert bundle.meta["config"]["context"] == 3 and bundle.meta["model"]["hparams"]["smooth"] == 4
    x = torch.from_numpy(np.random.default_rng(0).random((2, 24, 4)).astype(np.float32))
    smoothed, _ = bundle.module(x)
    inner = bundle.module.model.inner if hasattr(bundle.module.model, "inner") else None
    assert inner is not None
    raw, _ = inner((x - bundle.module.mean) / bundle.module.std)
    padded = torch.cat([raw[:, :1].expand(2, 3), raw], dim=1)
    expected = torch.stack([padded[:, i:i + 4].mean(dim=1) for i in range(24)], dim=1)
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-6)


def rank_map(scores: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """An independent numpy version of the rank mapping: linear between knots, linear past the last one."""
    k = len(knots)
    inside = np.interp(scores, knots, np.linspace(0.0, 1.0, k))
    spread = max(knots[-1] - knots[k // 2], 1e-12)
    return np.where(scores > knots[-1], 1.0 + (scores - knots[-1]) / spread, inside)


def test_an_ensemble_serves_the_mean_rank_of_members_with_their_own_scaling(tmp_path):
    """Two members fitted with different input scalings: the exported bundle takes raw values and scores each step
    as the mean of the members' ranks among their own clean validation scores."""
    from streamdet.train import train_model
    from streamdet.train.core import export_trained, validation_scores
    from streamdet.train.engineering import ensemble

    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'e.pt'}"])
    series = load_series(cfg)
    members = [train_model(cfg, series, "pca", progress=False),
               train_model(cfg, series, "knn", normalisation="none", progress=False)]
    assert not np.allclose(members[0].windows.std, members[1].windows.std)
    together = ensemble(members, ["pca", "knn normalisation=none"], cfg.scoring.stride)
    bundle = export_trained(cfg, series, together, tmp_path / "e.pt", 0.0)
    loaded = load_bundle(tmp_path / "e.pt")
    assert loaded.model_name == "ensemble" and loaded.meta["model"]["hparams"]["ensemble"] == ["pca", "knn normalisation=none"]
    raw = torch.from_numpy(series[0].test[:cfg.model.window * 3].reshape(3, cfg.model.window, -1))
    served, _ = loaded.module(raw)
    expected = 0.0
    for m in members:
        knots = np.quantile(np.concatenate(validation_scores(m, cfg.scoring.stride)), np.linspace(0, 1, 512))
        own, _ = m.served(raw)
        expected = expected + rank_map(own.detach().numpy().astype(np.float64), knots) / len(members)
    np.testing.assert_allclose(served.detach().numpy(), expected, rtol=1e-3, atol=1e-3)
    assert bundle.path == loaded.path


def test_auto_serves_the_ensemble_exactly_when_a_second_draw_prefers_it(tmp_path):
    cfg = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'j.pt'}", "model.auto_ensemble=2"])
    bundle = train_bundle(cfg, progress=False)
    mix = bundle.meta["training"]["selection"]["ensemble"]
    ranking = bundle.meta["training"]["selection"]["ranking"]
    assert mix["members"] == [e["candidate"] for e in ranking[:2]]
    assert mix["chosen"] == (mix["vus_pr"] > mix["best_alone_vus_pr"])
    assert (bundle.model_name == "ensemble") == mix["chosen"]
    off = load_config(SMD_CONFIG, AUTO + [f"model.bundle={tmp_path / 'k.pt'}", "model.auto_ensemble=0"])
    assert train_bundle(off, progress=False).meta["training"]["selection"]["ensemble"]["chosen"] is False


def test_a_tail_shorter_than_every_kind_still_gets_each_kind_inside_it():
    tail = np.random.default_rng(4).standard_normal((34, 2))  # a short NAB file's validation tail at window 32
    for first in range(len(KINDS)):
        made = inject(tail, seed=first, margin=32, count=1, first_kind=first)
        (start, end, kind, _), = made.segments
        assert kind == KINDS[first] and 0 < start < end < len(tail) and made.labels.sum() == end - start
