"""Backtest: replay each entity's labelled test split through the live pipeline, in-process, and score the outcome.

Rows are encoded as the JSON records the daemon consumes and pushed through `engine.Pipeline` (decode -> windows ->
batcher -> scorer -> thresholds -> alerts), so the report measures exactly what `streamdet run` would do. Thresholds
come only from the bundle's calibration (train/validation scores) and the pipeline's own online updates; test labels
are used after the replay, for scoring only.

Two kinds of prediction are reported (docs/evaluation.md):
- `alerts`: a row is predicted anomalous while an alert is open: from the row whose record made the alert fire up to
  the row before the record that resolved it (or the end of the split). This is what on-call sees, with the
  min_consecutive and cooldown rules applied.
- `over`: rows whose score exceeded the threshold in force at that row (the raw threshold decision).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..replay import encode_record
from ..types import Row

log = logging.getLogger(__name__)

STEP_S = 60.0  # replayed records are one minute apart; only the order and the spacing matter
START_TS = 1_700_000_000.0


class _FrozenClock:
    """The pipeline's clock during a replay: time never passes, so batches are scored when full or on drain."""

    def __call__(self) -> float:
        return 0.0


@dataclass
class EntityRun:
    """Everything one entity's replay produced, indexed by test row."""

    entity: str
    scores: np.ndarray
    thresholds: np.ndarray
    over: np.ndarray
    alerts: list[dict] = field(default_factory=list)  # AlertEvent.to_message() dicts with a "row" added
    seconds: float = 0.0
    batches: int = 0
    calibration: dict = field(default_factory=dict)  # the bundle's, for NAB's calibrated likelihoods (nab_calibrated)
    window: int = 1

    def alert_mask(self) -> np.ndarray:
        """Rows covered by an open alert (firing row .. row before its resolve)."""
        mask = np.zeros(self.scores.size, dtype=np.int8)
        opened: Optional[int] = None
        for alert in self.alerts:
            if alert["status"] == "firing" and opened is None:
                opened = alert["row"]
            elif alert["status"] == "resolved" and opened is not None:
                mask[opened:alert["row"]] = 1
                opened = None
        if opened is not None:
            mask[opened:] = 1
        return mask

    def firing_rows(self) -> np.ndarray:
        rows = np.zeros(self.scores.size, dtype=np.int8)
        rows[[a["row"] for a in self.alerts if a["status"] == "firing"]] = 1
        return rows


def evaluation_config(cfg, n_channels: int):
    """The run's config with alerts naming every channel, so interpretation metrics see a full ranking."""
    alerting = dataclasses.replace(cfg.alerting, top_channels=n_channels)
    return dataclasses.replace(cfg, alerting=alerting)


def fixed_regime(cfg):
    """A backtest replays one load regime exactly, at a fixed stride: `scoring.stride` 1 (the daemon at light load,
    each point scored at the end of its own window) or its ceiling (20: the daemon saturated), not whatever stride
    the adaptive rule would pick for the replay's own chunking."""
    return dataclasses.replace(cfg, scoring=dataclasses.replace(cfg.scoring, adaptive=False))


def _collect(result, run: EntityRun) -> None:
    for chunk in result.scored:
        rows = [source.index for source in chunk.sources]
        run.scores[rows], run.thresholds[rows], run.over[rows] = chunk.scores, chunk.thresholds, chunk.over
    for event in result.alerts:
        message = event.to_message()
        message["row"] = event.source.index
        run.alerts.append(message)
    run.batches += len(result.batches)


def replay_entity(cfg, bundle, entity: str, rows: np.ndarray, chunk: int = 512,
                  timestamps: Optional[np.ndarray] = None) -> EntityRun:
    """Push one entity's rows through a fresh Pipeline and record a score, threshold and verdict per row; records
    carry the dataset's `timestamps` when it has them, else one every STEP_S from START_TS."""
    from ..pipeline.engine import Pipeline
    from ..pipeline.settings import PipelineSettings

    pipeline = Pipeline(PipelineSettings.of(fixed_regime(cfg)), bundle, _FrozenClock())
    n = len(rows)
    run = EntityRun(entity, np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int8),
                    calibration=dict(getattr(bundle, "calibration", None) or {}), window=int(getattr(bundle, "window", 1)))
    started = time.perf_counter()
    times = timestamps if timestamps is not None else START_TS + np.arange(n) * STEP_S
    for lo in range(0, n, chunk):
        items = [(encode_record(entity, float(times[i]), rows[i]), Row(i)) for i in range(lo, min(lo + chunk, n))]
        result = pipeline.process(items)
        if result.rejected:
            reject = result.rejected[0]
            log.warning("backtest record rejected entity=%s row=%s reason=%s detail=%s", entity, reject.source.index,
                        reject.reason, reject.detail)
        _collect(result, run)
    _collect(pipeline.drain(), run)
    run.seconds = time.perf_counter() - started
    missing = int(np.isnan(run.scores).sum())
    if missing:
        log.warning("backtest rows without a score entity=%s missing=%d", entity, missing)
    return run


def run_evaluate(cfg, bundle_path, entities: Optional[list[str]] = None, out_dir=None) -> dict:
    """Backtest a bundle on the configured dataset's test split; write report.json, report.md and plots."""
    from ..bundle import load_bundle
    from ..data import load_series
    from .report import build_report, write_report

    bundle = load_bundle(cfg.path(str(bundle_path)))
    eval_cfg = evaluation_config(cfg, len(bundle.channels))
    series = load_series(cfg, entities)
    runs = []
    for s in series:
        run = replay_entity(eval_cfg, bundle, s.entity, np.asarray(s.test, dtype=np.float32),
                            timestamps=s.test_timestamps)
        log.info("backtest entity=%s rows=%d alerts=%d seconds=%.1f", s.entity, run.scores.size, len(run.alerts),
                 run.seconds)
        runs.append(run)
    report = build_report(cfg, bundle, series, runs)
    if out_dir is not None:
        write_report(report, runs, series, Path(out_dir), bundle=bundle)
    return report
