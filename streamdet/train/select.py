"""`model.name: auto`: choose the detector on validation data with injected anomalies, never on test labels.

Every candidate (a model name with its window, scaling and parameters; `model.auto_candidates`) is trained on the
training heads exactly as `streamdet train` trains one model. The last half of each entity's validation tail
(RANK_SHARE) is kept out of that fitting: candidates fit whatever they fit on validation data (early stopping,
lstm_ae's error model, channel_norm's scales, rank knots) on the first half only, and are ranked on copies of the
second half with synthetic anomalies (train/inject.py: the generator's five kinds plus level shifts and broken
correlations, sized from the rows' own spread; every kind in every tail's copies). Ranking on rows a candidate was
fitted on favoured exactly the candidates that fit most on validation data (on ASD, channel-normalised pca and
lstm_ae ranked first on their own validation rows and last on held-out ones: docs/evaluation.md). Candidates score
the copies as the daemon does (with their score engineering: train/engineering.py, pipeline/standardise.py) and are
ranked by mean VUS-PR against the injected labels (AUC-PR breaks ties). The best candidate is then trained again on
the whole train split, as `model.name` set to it would train, and exported with its calibration from the clean
tails; `meta["training"]["selection"]` and the log hold the full ranking.

The test split is never loaded for this: `load_series` returns it, but nothing here reads `test`/`test_labels`
(tests/train/test_select.py checks that scrambling them changes nothing).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..evaluate.vus import auc_pr, vus
from .candidates import Candidate, check_candidates
from ..pipeline.standardise import make_prior, standardise_stream
from ..pipeline.stride import effective_stride
from .core import Trained, export_trained, train_model, validation_scores
from .calibration import daemon_like_scores, scored_start
from .engineering import engineer, ensemble
from .fingerprint import fingerprint
from .inject import KINDS, default_count, inject, injection_seed
from .splits import split_point
from .whole_split import refit_whole_split

log = logging.getLogger(__name__)

INJECTED_COPIES = 4  # injected versions of each ranking tail at least (different anomaly draws and kinds) ...
KIND_REPEATS = 2  # ... and as many as it takes for every kind to be injected this many times per tail
SECOND_DRAW = 7919  # seed offset of the independent draw that judges the ensemble
RANK_SHARE = 0.5  # share of each validation tail held out of all fitting and used for the ranking only
SELECTION_VUS_WINDOW = 20  # VUS buffer on the short injected tails (the test metric uses 100 on whole test splits)


@dataclass
class Injections:
    """Injected validation tails, shared by every candidate so that they are ranked on the same anomalies."""

    values: list[np.ndarray]
    labels: list[np.ndarray]
    kinds: list[list[str]]  # the kinds injected into each copy


def make_injections(tails: list[np.ndarray], seed: int, margin: int) -> Injections:
    """Copies of each tail with anomalies; a short tail holds one anomaly per copy, so it gets more copies: kinds
    cycle across copies, and too few copies never showed the last kinds (ASD: only 4 of 7 kinds were ever drawn)."""
    values, labels, kinds = [], [], []
    for i, tail in enumerate(tails):
        count = default_count(len(tail), margin)
        for copy in range(max(INJECTED_COPIES, -(-KIND_REPEATS * len(KINDS) // count))):
            made = inject(tail, seed=injection_seed(seed, i, copy, len(tails)), kinds=KINDS, margin=margin, count=count,
                          first_kind=(i + copy) * count)
            values.append(made.values)
            labels.append(made.labels)
            kinds.append([kind for _, _, kind, _ in made.segments])
    return Injections(values, labels, kinds)


def validation_score(trained: Trained, injections: Injections, stride: int) -> dict:
    """Mean VUS-PR and AUC-PR of the candidate's daemon-like scores against the injected labels."""
    stride = stride if getattr(trained.model, "trainable", True) else trained.window  # fitted: stride-free scores
    served, vus_prs, auc_prs = trained.served, [], []
    prior = make_prior(np.concatenate(validation_scores(trained, stride))) if trained.standardise else None
    for values, labels in zip(injections.values, injections.labels):
        scores = daemon_like_scores(served, values, trained.window, stride, trained.context)
        if prior:  # as the pipeline will: each tail is one fresh entity
            scores = standardise_stream(prior, scores, effective_stride(stride, trained.window, trained.context))
        start = scored_start(len(values), trained.window, stride, trained.context)
        y = labels[start:start + len(scores)]
        if len(scores) < 10 or not y.any():
            continue
        vus_prs.append(vus(y, scores, SELECTION_VUS_WINDOW)["vus_pr"])
        auc_prs.append(auc_pr(y, scores))
    if not vus_prs:
        return {"vus_pr": float("nan"), "auc_pr": float("nan"), "tails": 0}
    return {"vus_pr": float(np.mean(vus_prs)), "auc_pr": float(np.mean(auc_prs)), "tails": len(vus_prs)}


def rank(entries: list[dict]) -> list[dict]:
    """Best first: VUS-PR, then AUC-PR; a candidate that failed or scored nothing ranks last."""
    def key(e):
        v, a = e.get("vus_pr", float("nan")), e.get("auc_pr", float("nan"))
        return (-(v if np.isfinite(v) else -1.0), -(a if np.isfinite(a) else -1.0))

    return sorted(entries, key=key)


def fit_candidate(cfg, series, c: Candidate, base_models: dict, progress: bool) -> Trained:
    """The candidate's fitted model: trained once per base (and window length), wrapped for its score engineering
    (train/engineering.py), then refitted on all of `series`' train splits where it asks to be."""
    def fit(window: int) -> Trained:
        key = dataclasses.replace(c, window=window).base
        if key not in base_models:
            base_models[key] = train_model(cfg, series, c.name, window=window, normalisation=c.normalisation,
                                           preset=c.preset, params=c.params or None, progress=progress)
        return base_models[key]

    trained = engineer(fit(c.window or cfg.model.window), c.score_settings(cfg.model.score), fit, cfg.scoring.stride)
    return refit_whole_split(trained, series, cfg.train) if c.refits(cfg.train) else trained


def ranking_split(cfg, series: list) -> tuple:
    """(config, series, tails): the train splits without their last RANK_SHARE of the validation tail, with
    train.val_fraction set so that the training heads stay the same, and the rows cut off (ranking only)."""
    fraction = cfg.train.val_fraction
    held = fraction * RANK_SHARE
    cut_series, tails = [], []
    for s in series:
        keep = len(s.train) - int(round(len(s.train) * held))
        cut_series.append(dataclasses.replace(
            s, train=s.train[:keep], train_labels=None if s.train_labels is None else s.train_labels[:keep],
            train_timestamps=None if s.train_timestamps is None else s.train_timestamps[:keep]))
        tails.append(s.train[keep:])
    train = dataclasses.replace(cfg.train, val_fraction=(fraction - held) / (1.0 - held))
    return dataclasses.replace(cfg, train=train), cut_series, tails


def held_out_or_tails(cfg, series: list, margin: int) -> tuple:
    """ranking_split where every series is long enough for it (each fitting tail a window, each ranking tail two);
    else the validation tails themselves, as before held-out ranking, with a warning (a short NAB file's 170-row
    train split leaves 17 rows to each half)."""
    fit_cfg, fit_series, tails = ranking_split(cfg, series)
    try:
        for s in fit_series:
            split_point(len(s.train), margin, fit_cfg.train.val_fraction, s.entity)
    except DataError:
        short = True
    else:
        short = any(len(t) < 2 * margin for t in tails)
    if not short:
        return fit_cfg, fit_series, tails
    log.warning("auto: train splits too short to hold ranking rows out of the fitting (window %d): candidates are "
                "ranked on the validation tails they were fitted on", margin)
    tails = [s.train[split_point(len(s.train), margin, cfg.train.val_fraction, s.entity):] for s in series]
    return cfg, series, tails


def rank_candidates(cfg, candidates: list, fit_cfg, fit_series, injections: Injections, progress: bool):
    """(ranking, fitted candidates by spec): every candidate fitted without the ranking rows and scored on them."""
    entries, fitted = [], {}
    base_models: dict = {}
    for c in candidates:
        t0 = time.perf_counter()
        try:  # one candidate that cannot train or score (too short a series) must not stop auto
            trained = fit_candidate(fit_cfg, fit_series, c, base_models, progress)
            entry = {"candidate": c.spec, **validation_score(trained, injections, cfg.scoring.stride),
                     "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:
            log.warning("auto: candidate %r failed: %s", c.spec, exc)
            entries.append({"candidate": c.spec, "error": str(exc)[:200]})
            continue
        log.info("auto: candidate %s validation vus_pr=%.3f auc_pr=%.3f (%.1f s)", c.spec, entry["vus_pr"],
                 entry["auc_pr"], entry["seconds"])
        entries.append(entry)
        fitted[c.spec] = trained
    ranking = rank(entries)
    if not ranking or ranking[0]["candidate"] not in fitted or not np.isfinite(ranking[0]["vus_pr"]):
        raise ConfigError("model.name auto: no candidate could be trained and scored on the validation tails")
    return ranking, fitted


def judge_ensemble(cfg, ranking: list, fitted: dict, rank_tails: list, margin: int) -> dict:
    """The rank average of the best `model.auto_ensemble` candidates against the best one alone, both scored on a
    second, independent draw of anomalies in the ranking rows (the members were picked on the first draw, so that
    draw would flatter the ensemble). Chosen only if it scores higher there."""
    size = cfg.model.auto_ensemble
    members = [e["candidate"] for e in ranking[:size] if e["candidate"] in fitted and np.isfinite(e["vus_pr"])]
    if size < 2 or len(members) < 2:
        return {"members": members, "chosen": False}
    second = make_injections(rank_tails, cfg.train.seed + SECOND_DRAW, margin)
    together = ensemble([fitted[m] for m in members], members, cfg.scoring.stride)
    mixed = validation_score(together, second, cfg.scoring.stride)["vus_pr"]
    alone = validation_score(fitted[members[0]], second, cfg.scoring.stride)["vus_pr"]
    return {"members": members, "vus_pr": mixed, "best_alone_vus_pr": alone, "chosen": bool(mixed > alone)}


def train_auto(cfg, series, path, started: float, progress: bool = True, source=None):
    """Train every candidate without the ranking rows, rank them on those rows with injected anomalies, train the
    best one (or the ensemble of the best few, where a second draw prefers it) on the whole train splits, export."""
    candidates = check_candidates(cfg.model)
    margin = max(c.window or cfg.model.window for c in candidates)
    fit_cfg, fit_series, rank_tails = held_out_or_tails(cfg, series, margin)
    injections = make_injections(rank_tails, cfg.train.seed, margin)
    ranking, fitted = rank_candidates(cfg, candidates, fit_cfg, fit_series, injections, progress)
    mix = judge_ensemble(cfg, ranking, fitted, rank_tails, margin)
    chosen = ranking[0]["candidate"]
    log.info("auto: chose %s (validation VUS-PR %.3f); ranking: %s", "ensemble of " + ", ".join(mix["members"])
             if mix["chosen"] else chosen, ranking[0]["vus_pr"],
             ", ".join(f"{e['candidate']}={e.get('vus_pr', float('nan')):.3f}" for e in ranking))
    selection = {"chosen": "ensemble" if mix["chosen"] else chosen, "ensemble": mix,
                 "metric": "mean VUS-PR (buffer 0..%d) on validation tails with injected anomalies held out of all "
                 "fitting" % SELECTION_VUS_WINDOW, "kinds": list(KINDS),
                 "copies_per_tail": len(injections.values) // max(1, len(rank_tails)),
                 "ranking_rows": [len(t) for t in rank_tails], "held_out": fit_cfg is not cfg, "ranking": ranking}
    by_spec = {c.spec: c for c in candidates}
    base_models: dict = {}  # as `model.name` set to the candidate trains it: on the whole train splits
    finals = [fit_candidate(cfg, series, by_spec[m], base_models, progress)
              for m in (mix["members"] if mix["chosen"] else [chosen])]
    final = ensemble(finals, mix["members"], cfg.scoring.stride) if mix["chosen"] else finals[0]
    settings = {m: dataclasses.asdict(by_spec[m].score_settings(cfg.model.score)) for m in mix["members"] + [chosen]}
    score = {"members": {m: settings[m] for m in mix["members"]}} if mix["chosen"] else settings[chosen]
    # resumed by `train --per-entity` as what was asked for (auto), not as the candidate it chose
    extra = {"selection": selection, "score": score, "fingerprint": fingerprint(cfg, "auto", series)}
    return export_trained(cfg, series, final, path, started, extra, source)
