"""`streamdet train`: data -> windows -> fit -> calibrate on validation scores -> export a verified bundle.

`model.name: auto` (train/select.py) trains several candidates the same way and keeps the one that best finds
anomalies injected into the validation tails; the bundle and the log record the ranking.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from ..bundle import Bundle
from ..data import load_series
from .candidates import check_score
from .core import Trained, export_trained, model_context, train_model
from .engineering import engineer
from .whole_split import refit_whole_split

__all__ = ["train_bundle", "Trained", "train_model", "export_trained", "model_context"]


def train_bundle(cfg, *, model_name: Optional[str] = None, entities: Optional[list[str]] = None,
                 out: Optional[str] = None, progress: bool = True, series: Optional[list] = None,
                 source: Optional[dict] = None) -> Bundle:
    """Train one model (or, for `auto`, choose one on validation data) across the configured entities' train
    splits and export it with its calibration. `series` (e.g. assembled from the metrics topic: data/topic.py)
    replaces the configured dataset; `source` describes where it came from and is recorded in the bundle's
    training metadata."""
    started = time.perf_counter()
    name = model_name or cfg.model.name
    series = series if series is not None else load_series(cfg, entities)
    path = out or cfg.path(cfg.model.bundle)
    if name == "auto":
        from .select import train_auto

        return train_auto(cfg, series, path, started, progress=progress, source=source)
    settings = check_score(cfg.model)
    trained = engineer(train_model(cfg, series, name, progress=progress), settings,
                       lambda window: train_model(cfg, series, name, window=window, progress=progress),
                       cfg.scoring.stride)
    if cfg.train.refit:
        trained = refit_whole_split(trained, series, cfg.train)
    return export_trained(cfg, series, trained, path, started, {"score": dataclasses.asdict(settings)},
                          source=source)
