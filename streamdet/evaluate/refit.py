"""Scheduled retraining, replayed: what `streamdet train` on a timer plus the daemon's hot reload does to detection.

A model trained once goes stale where an entity's normal changes: on four of SMD's 19 machines the normal scores of
the test split end 2 to 630 times above their calibration, and an alert stays open for two weeks
(docs/evaluation.md, "Stale models and scheduled retraining"). The operational remedy is to retrain on recent data
on a schedule and let the daemon hot-reload the file. This replays that schedule exactly: the test split streams
through one Pipeline; after every `every` rows the entity's bundle is retrained on its latest `rows` rows (the end
of its train split followed by the test rows streamed so far: past data only, unlabelled, anomalies included, as a
retraining job would see them) and swapped in with Pipeline.replace_model, the code path of the daemon's hot reload
(windows kept, thresholds from the new calibration, an open alert resolved on the new model's scores). Test labels
are read only by the report.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data.series import Series
from ..errors import StreamdetError
from .backtest import EntityRun, Replay

Retrain = Callable[[Series, str], object]  # (series whose train split is the recent rows, bundle path) -> bundle


def recent_rows(train: np.ndarray, test: np.ndarray, upto: int, rows: int) -> np.ndarray:
    """The latest `rows` rows before test row `upto` (0: as many as the train split has): the end of the train
    split, then test rows [0, upto)."""
    seen = np.concatenate([train, test[:upto]]) if upto else train
    return seen[-(rows or len(train)):]


def model_to_retrain(bundle) -> str:
    """The registry name that trains `bundle` again: `auto` for a bundle auto chose (it chooses again on the
    recent rows), else the bundle's own model."""
    return "auto" if bundle.meta.get("training", {}).get("selection") else bundle.model_name


def retrain_with(cfg, model_name: str) -> Retrain:
    """A Retrain that runs `streamdet train`'s own code (train_bundle) on the recent rows."""
    from ..train import train_bundle

    def retrain(series: Series, out: str):
        return train_bundle(cfg, model_name=model_name, series=[series], out=out, progress=False)

    return retrain


def replay_with_refits(cfg, bundle, series: Series, every: int, rows: int, retrain: Retrain, chunk: int = 512,
                       work: Optional[str] = None) -> EntityRun:
    """Replay `series.test` as replay_entity does, retraining after every `every` rows on the latest `rows` rows
    (0: as many as the train split, so every retraining has the first one's budget) and swapping the new bundle
    in. The run's `refits` counts the swaps."""
    if every < 1:
        raise StreamdetError(f"refit every {every} rows: must be at least 1")
    test = np.asarray(series.test, dtype=np.float32)
    train = np.asarray(series.train, dtype=np.float32)
    started, retraining = time.perf_counter(), 0.0
    replay = Replay(cfg, bundle, series.entity, test, series.test_timestamps)
    with tempfile.TemporaryDirectory(dir=work) as folder:
        for segment_start in range(0, len(test), every):
            if segment_start:
                replay.collect(replay.pipeline.flush_batches())  # windows already cut: scored by the model they met
                first_new = replay.next_scored_row()
                began = time.perf_counter()
                recent = Series(series.entity, list(series.channels), recent_rows(train, test, segment_start, rows),
                                test[:0], np.zeros(0, dtype=np.int8))
                fresh = retrain(recent, str(Path(folder) / f"refit-{segment_start}.pt"))
                replay.pipeline.replace_model(fresh)
                replay.run.recalibrated.append((first_new, dict(fresh.calibration)))  # NAB's inputs read it
                retraining += time.perf_counter() - began
                replay.run.refits += 1
            replay.stream(segment_start, min(segment_start + every, len(test)), chunk)
        run = replay.finish()
    run.seconds = time.perf_counter() - started - retraining
    run.retrain_seconds = retraining
    return run
