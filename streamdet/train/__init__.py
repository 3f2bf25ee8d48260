"""`streamdet train`: data -> windows -> fit -> calibrate on validation scores -> export a verified bundle."""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np
import torch

from ..bundle import Bundle, ServedModel, export_bundle
from ..config import to_dict
from ..data import load_series
from ..models import registry
from .calibration import calibrate, daemon_like_scores
from .fingerprint import fingerprint
from .splits import make_windows
from .trainer import fit

log = logging.getLogger(__name__)

__all__ = ["train_bundle"]


def model_context(model) -> int:
    """Rows before a step that the model's score of that step reads (sub-window baselines: span - 1); the pipeline
    caps its stride so that every kept step has them (pipeline/windows.effective_stride)."""
    return max(0, int(getattr(model, "span", 1)) - 1)


def train_bundle(cfg, *, model_name: Optional[str] = None, entities: Optional[list[str]] = None,
                 out: Optional[str] = None, progress: bool = True, series: Optional[list] = None,
                 source: Optional[dict] = None) -> Bundle:
    """Train one model across the configured entities' train splits and export it with its calibration.
    `series` (e.g. assembled from the metrics topic: data/topic.py) replaces the configured dataset; `source`
    describes where it came from and is recorded in the bundle's training metadata."""
    started = time.perf_counter()
    name = model_name or cfg.model.name
    series = series if series is not None else load_series(cfg, entities)
    window = cfg.model.window
    tc = cfg.train
    w = make_windows(series, window, tc.train_stride, tc.val_fraction, tc.max_windows, tc.normalisation)
    log.info("training %s on %s: %d train / %d validation windows of %d x %d", name,
             ",".join(s.entity for s in series), len(w.train), len(w.val), window, len(series[0].channels))
    model = registry.build(name, len(series[0].channels), window, cfg.model.preset, cfg.model.params,
                           cfg.model.patch.size, cfg.model.patch.stride)
    result = fit(model, w.train, w.val, tc, train_labels=w.train_labels, val_labels=w.val_labels, progress=progress)
    served = ServedModel(model, w.mean, w.std).eval()
    context = model_context(model)
    scores = np.concatenate([daemon_like_scores(served, tail, window, cfg.scoring.stride, context)
                             for tail in w.val_tails])
    calibration = calibrate(scores, cfg.threshold.init_level)
    training = {**result.as_dict(), "entities": [s.entity for s in series],
                "dataset": (source or {}).get("dataset", cfg.data.dataset), "source": source or {},
                "fingerprint": fingerprint(cfg, name, series),
                "train_windows": int(len(w.train)), "val_windows": int(len(w.val)),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}
    path = out or cfg.path(cfg.model.bundle)
    config = {"preset": cfg.model.preset, "params": dict(cfg.model.params), "scoring_stride": cfg.scoring.stride,
              "context": context, "train": to_dict(cfg)["train"]}
    bundle = export_bundle(model, path, channels=series[0].channels, mean=w.mean, std=w.std,
                           calibration=calibration, training=training, config=config,
                           bundle_format=tc.export_format)
    log.info("bundle written to %s (%.1f s)", bundle.path, training["seconds"])
    return bundle
