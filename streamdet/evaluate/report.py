"""Turn backtest runs into metrics per entity and aggregated (micro over points, macro over entities), and write them.

Keys are flat: `alert.*` for predictions from open alerts, `over.*` for raw over-threshold rows, threshold-free
metrics (`auc_roc`, `auc_pr`, `vus_roc`, `vus_pr`) from the per-row scores, `*_paper_only` for point-adjusted and
best-over-thresholds numbers (they use test labels or inflate results; for comparison with papers only).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from . import metrics as M
from .nab_adaptive import adaptive_likelihood
from .nab_calibrated import calibrated_by_segment, episode_onsets
from .nab_score import corpus_score, load_windows, optimised_corpus_score, relative_scores
from .vus import auc_pr, auc_roc, vus

log = logging.getLogger(__name__)

VUS_MAX_WINDOW = 100  # TSB-AD's default buffer length for VUS
PLOT_LIMIT = 24  # at most this many entity plots per report


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in values.items()}


def _scores_for_ranking(run) -> np.ndarray:
    """Per-row scores; a row the pipeline did not score ranks lowest (and is counted in the report)."""
    scores = run.scores.copy()
    missing = np.isnan(scores)
    if missing.any():
        scores[missing] = np.nanmin(scores) if (~missing).any() else 0.0
    return scores


def interpretation_pairs(run, series, channels: list[str]) -> list[tuple[list[str], set[str]]]:
    """(ranked channels of a firing alert, true channels) for each alert raised inside an interpreted segment
    (segments are end-exclusive, as streamdet.data.layout reads them)."""
    segments = getattr(series, "interpretation", None) or []
    pairs = []
    for alert in run.alerts:
        if alert["status"] != "firing":
            continue
        for start, end, names in segments:
            if start <= alert["row"] < end:
                ranked = [c["name"] for c in alert.get("top_channels", [])]
                pairs.append((ranked, {channels[i] if isinstance(i, int) else i for i in names}))
                break
    return pairs


def entity_metrics(run, series, channels: list[str]) -> tuple[dict, dict]:
    """Flat metrics of one entity, plus the raw counts used for micro averages."""
    labels = np.asarray(series.test_labels).astype(np.int8)
    scores = _scores_for_ranking(run)
    counts = {"alert": M.count(labels, run.alert_mask()), "over": M.count(labels, run.over)}
    out = {"entity": run.entity, "rows": int(labels.size), "anomalous_rows": int(labels.sum()),
           "unscored_rows": int(np.isnan(run.scores).sum()), "alerts": int(run.firing_rows().sum()),
           "scoring_seconds": round(run.seconds, 3)}
    if run.refits:  # replayed with scheduled retraining (evaluate/refit.py)
        out.update({"refits": run.refits, "retrain_seconds": round(run.retrain_seconds, 3)})
    for kind, c in counts.items():
        out.update(_prefixed(kind, M.summarise(c)))
    out["counts"] = {kind: [c.tp, c.fp, c.fn] for kind, c in counts.items()}  # for bootstraps of pooled metrics
    out.update({"auc_roc": auc_roc(labels, scores), "auc_pr": auc_pr(labels, scores)})
    out.update(vus(labels, scores, VUS_MAX_WINDOW) if labels.any() else {"vus_roc": math.nan, "vus_pr": math.nan})
    out.update(M.best_f1(labels, scores))
    pairs = interpretation_pairs(run, series, channels)
    out.update(_prefixed("interp", M.interpretation_scores(pairs)))
    return out, {"counts": counts, "pairs": pairs}


def _aggregate(per_entity: list[dict], raw: list[dict]) -> dict:
    micro = {}
    for kind in ("alert", "over"):
        total = sum((r["counts"][kind] for r in raw), M.Counts())
        micro.update(_prefixed(kind, M.summarise(total)))
    micro.update(_prefixed("interp", M.interpretation_scores([p for r in raw for p in r["pairs"]])))
    return {"micro": micro, "macro": M.macro(per_entity)}


def nab_protocol_scores(runs, windows) -> dict:
    """NAB's own protocol (one threshold per profile swept over the corpus) on four inputs: `optimised`, each file's
    calibrated likelihood (nab_calibrated; what the table's NAB (NAB's) column shows), `onsets`, the same kept only
    where an episode starts, `adaptive`, HTM's anomaly likelihood over it (nab_adaptive), and `relative`, scores
    relative to the operating threshold (the earliest input, kept for comparison: not comparable across files,
    docs/evaluation.md)."""
    likelihoods = {r.entity: calibrated_by_segment(r.scores, r.calibration, r.recalibrated) for r in runs}
    out = optimised_corpus_score(likelihoods, windows)
    out.update(optimised_corpus_score({r.entity: episode_onsets(likelihoods[r.entity], r.window) for r in runs},
                                      windows, suffix="onsets"))
    adaptive = {r.entity: adaptive_likelihood(likelihoods[r.entity], r.calibration) for r in runs}
    out.update(optimised_corpus_score(adaptive, windows, suffix="adaptive"))
    out.update(optimised_corpus_score({r.entity: relative_scores(r.scores, r.thresholds) for r in runs}, windows,
                                      suffix="relative"))
    return out


def build_report(cfg, bundle, series_list, runs) -> dict:
    """The whole report as plain data (report.json)."""
    per_entity, raw = [], []
    for s, run in zip(series_list, runs):
        values, counts = entity_metrics(run, s, list(bundle.channels))
        per_entity.append(values)
        raw.append(counts)
    aggregate = _aggregate(per_entity, raw)
    if cfg.data.dataset == "nab":
        windows = load_windows(cfg.path(cfg.data.root) / "nab", [r.entity for r in runs])
        aggregate["nab"] = corpus_score({r.entity: r.firing_rows() for r in runs}, windows)
        aggregate["nab"].update(nab_protocol_scores(runs, windows))
    return {
        "dataset": cfg.data.dataset,
        "model": {"name": bundle.model_name, "sha256": bundle.sha256, "window": bundle.window},
        "threshold": {"method": cfg.threshold.method, "risk": cfg.threshold.risk, "update": cfg.threshold.update,
                      "init_level": (bundle.calibration.get("pot") or {}).get("init_level", cfg.threshold.init_level)},
        "alerting": {"min_consecutive": cfg.alerting.min_consecutive, "cooldown": cfg.alerting.cooldown,
                     "resolve_quantile": cfg.alerting.resolve_quantile, "attribute_at": cfg.alerting.attribute_at},
        "scoring_stride": cfg.scoring.stride,
        "attribution": (bundle.calibration.get("attribution") or {}).get("method", "raw"),  # how alerts rank channels
        "vus_max_window": VUS_MAX_WINDOW,
        "entities": per_entity,
        "aggregate": aggregate,
    }


HEADLINE = [("alert.point_f1", "point F1 (alerts)"), ("alert.event_f1", "event F1 (alerts)"),
            ("alert.composite_f1", "composite F1"), ("alert.detection_delay", "delay (steps)"),
            ("alert.false_alerts_per_1k", "false alerts /1k"), ("over.point_f1", "point F1 (over)"),
            ("auc_pr", "AUC-PR"), ("vus_pr", "VUS-PR"), ("vus_roc", "VUS-ROC"),
            ("alert.pa_f1_paper_only", "PA-F1 (papers only)")]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def to_markdown(report: dict) -> str:
    """A human-readable summary: aggregates first, then one row per entity."""
    head = "| entity | rows | anomalous | alerts | " + " | ".join(t for _, t in HEADLINE) + " |"
    rule = "|" + "---|" * (4 + len(HEADLINE))
    lines = [f"# Backtest: {report['model']['name']} on {report['dataset']}", "",
             f"Threshold {report['threshold']['method']} (risk {report['threshold']['risk']}), "
             f"alerts after {report['alerting']['min_consecutive']} consecutive over-threshold points, "
             f"scoring stride {report['scoring_stride']}, VUS buffer 0..{report['vus_max_window']}.", "",
             "## Aggregate", ""]
    for scope, values in report["aggregate"].items():
        lines.append(f"- **{scope}**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()))
    lines += ["", "## Per entity", "", head, rule]
    for e in report["entities"]:
        cells = [e["entity"], e["rows"], e["anomalous_rows"], e["alerts"]] + [e.get(k, math.nan) for k, _ in HEADLINE]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(report: dict, runs, series_list, out_dir: Path, bundle=None) -> None:
    """report.json (NaN as null), report.md and, when matplotlib is installed, the figures (evaluate/figures.py: per
    entity and, given the bundle, loss curves, ROC/PR, score distributions, input vs expected)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(_json_safe(report), indent=2))
    (out_dir / "report.md").write_text(to_markdown(report))
    try:
        from .figures import write_figures
    except ImportError:
        log.info("matplotlib not installed (pip install streamdet[plots]); report written without plots")
        return
    write_figures(bundle, runs, series_list, out_dir, PLOT_LIMIT)
