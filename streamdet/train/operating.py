"""Operating settings (alerting.min_consecutive, alerting.cooldown, alerting.resolve_quantile, threshold.risk,
threshold.init_level) judged on validation data with injected anomalies, through the daemon's own threshold and
alert stages.

For one setting: the calibration is rebuilt from the clean validation scores at that init_level (as training
would), a fresh ThresholdBank and AlertManager (pipeline/) run over the scores of the injected tail in stream order,
and the rows covered by open alerts are compared with the injected labels. The objective is the mean of point-F1
and event-F1 of those alerts (the two operating-threshold metrics of docs/RESULTS.md). tools/choose_operating.py
runs this over a grid and entities; the config defaults and their comments come from its table, not from test
labels.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..evaluate import metrics as M
from ..evaluate.backtest import EntityRun
from ..pipeline.alerts import AlertManager
from ..pipeline.thresholds import ResolveLevels, ThresholdBank
from .calibration import calibrate

GRID = {"min_consecutive": (1, 2, 3), "cooldown": (5, 10, 20, 40), "resolve_quantile": (0.0, 0.8, 0.9, 0.95, 0.98),
        "risk": (0.1, 3e-2, 1e-2, 1e-3, 1e-4), "init_level": (0.9, 0.95, 0.98)}


def settings_grid(grid: dict = GRID) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def apply_settings(cfg, setting: dict):
    """cfg with one setting's alerting and threshold values."""
    alerting = dataclasses.replace(cfg.alerting, min_consecutive=setting["min_consecutive"],
                                   cooldown=setting["cooldown"],
                                   resolve_quantile=setting.get("resolve_quantile", cfg.alerting.resolve_quantile))
    threshold = dataclasses.replace(cfg.threshold, risk=setting["risk"], init_level=setting["init_level"])
    return dataclasses.replace(cfg, alerting=alerting, threshold=threshold)


def alert_mask(cfg, calibration: dict, scores: np.ndarray) -> np.ndarray:
    """Rows covered by an open alert when `scores` stream through fresh threshold and alert stages."""
    n = len(scores)
    row = scores.astype(np.float64)[None, :]  # [1, n]: the tail is one chunk of one entity
    thresholds, over = ThresholdBank(cfg.threshold, calibration).decide(["v"], row, np.isfinite(row))
    thresholds, over = thresholds[0], over[0]
    quantile = cfg.alerting.resolve_quantile
    alerts = AlertManager(cfg.alerting, ["c"], {"name": "validation", "sha256": ""},
                          resolve_level_of=ResolveLevels(quantile, lambda _: ("v", calibration)) if quantile else None)
    events = alerts.update("v", np.arange(n, dtype=np.float64), scores, thresholds, over, np.zeros((n, 1)),
                           list(range(n)))
    rows = [{"status": e.status, "row": int(e.source)} for e in events]
    return EntityRun("v", scores, thresholds, over.astype(np.int8), rows).alert_mask()


def objective(counts: M.Counts) -> dict:
    s = M.summarise(counts)
    point, event = (0.0 if np.isnan(s[k]) else s[k] for k in ("point_f1", "event_f1"))
    return {"point_f1": point, "event_f1": event, "objective": (point + event) / 2,
            "false_alerts_per_1k": s["false_alerts_per_1k"]}


def judge(cfg, clean: list[np.ndarray], injected: list[tuple[np.ndarray, np.ndarray]], setting: dict) -> dict:
    """One setting over one model's validation scores: clean tails (calibration) and (scores, labels) pairs."""
    cfg = apply_settings(cfg, setting)
    calibration = calibrate(np.concatenate(clean), setting["init_level"])
    counts = sum((M.count(labels, alert_mask(cfg, calibration, scores)) for scores, labels in injected), M.Counts())
    return objective(counts)
