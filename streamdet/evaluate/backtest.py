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
    refits: int = 0  # bundles swapped in by scheduled retraining (evaluate/refit.py)
    recalibrated: list = field(default_factory=list)  # (first row a swapped-in bundle scored, its calibration)
    retrain_seconds: float = 0.0

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


class Replay:
    """One entity's rows streaming through a fresh Pipeline, with a score, threshold and verdict recorded per row
    (an EntityRun); records carry the dataset's `timestamps` when it has them, else one every STEP_S from START_TS.
    replay_entity streams them all at once, evaluate/refit.py in segments with a model swap between them."""

    def __init__(self, cfg, bundle, entity: str, rows: np.ndarray, timestamps: Optional[np.ndarray] = None):
        from ..pipeline.engine import Pipeline
        from ..pipeline.settings import PipelineSettings

        self.pipeline = Pipeline(PipelineSettings.of(fixed_regime(cfg)), bundle, _FrozenClock())
        self.entity, self.rows = entity, rows
        n = len(rows)
        self.run = EntityRun(entity, np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int8),
                             calibration=dict(getattr(bundle, "calibration", None) or {}),
                             window=int(getattr(bundle, "window", 1)))
        self.times = timestamps if timestamps is not None else START_TS + np.arange(n) * STEP_S

    def stream(self, start: int, stop: int, chunk: int = 512) -> None:
        """Push rows [start, stop) in polls of `chunk` records."""
        for lo in range(start, stop, chunk):
            items = [(encode_record(self.entity, float(self.times[i]), self.rows[i]), Row(i))
                     for i in range(lo, min(lo + chunk, stop))]
            result = self.pipeline.process(items)
            if result.rejected:
                reject = result.rejected[0]
                log.warning("backtest record rejected entity=%s row=%s reason=%s detail=%s", self.entity,
                            reject.source.index, reject.reason, reject.detail)
            self.collect(result)

    def collect(self, result) -> None:
        """Record what one call of the pipeline returned (scored chunks and alert events) by test row."""
        run = self.run
        for chunk in result.scored:
            rows = [source.index for source in chunk.sources]
            run.scores[rows], run.thresholds[rows], run.over[rows] = chunk.scores, chunk.thresholds, chunk.over
        for event in result.alerts:
            message = event.to_message()
            message["row"] = event.source.index
            run.alerts.append(message)
        run.batches += len(result.batches)

    def next_scored_row(self) -> int:
        """The row the next scored window starts scoring at (rows are scored in order)."""
        scored = np.flatnonzero(~np.isnan(self.run.scores))
        return int(scored[-1]) + 1 if scored.size else 0

    def finish(self) -> EntityRun:
        """Score what is still pending and hand over the run."""
        self.collect(self.pipeline.drain())
        self.pipeline.close()
        missing = int(np.isnan(self.run.scores).sum())
        if missing:
            log.warning("backtest rows without a score entity=%s missing=%d", self.entity, missing)
        return self.run


def replay_entity(cfg, bundle, entity: str, rows: np.ndarray, chunk: int = 512,
                  timestamps: Optional[np.ndarray] = None) -> EntityRun:
    """Push one entity's rows through a fresh Pipeline and record a score, threshold and verdict per row."""
    started = time.perf_counter()
    replay = Replay(cfg, bundle, entity, rows, timestamps)
    replay.stream(0, len(rows), chunk)
    run = replay.finish()
    run.seconds = time.perf_counter() - started
    return run
