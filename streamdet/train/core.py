"""Training one model: fit on the train split, calibrate on the validation tail, export a verified bundle."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..bundle import Bundle, ServedModel, export_bundle
from ..config import to_dict
from ..models import registry
from ..pipeline.stride import effective_stride
from ..pipeline.standardise import make_prior, standardise_stream
from .attribution import fit_record
from .calibration import calibrate, daemon_like_outputs, daemon_like_scores
from .fingerprint import fingerprint
from .splits import Windows, make_windows
from .trainer import TrainResult, fit, seed_everything

log = logging.getLogger(__name__)

def model_context(model) -> int:
    """Rows before a step that the model's score of that step reads (sub-window baselines: span - 1); the pipeline
    caps its stride so that every kept step has them (pipeline/stride.effective_stride)."""
    return max(0, int(getattr(model, "span", 1)) - 1)


@dataclass
class Trained:
    """One fitted model with the windows and scaling it was trained on."""

    name: str
    model: torch.nn.Module
    windows: Windows
    result: TrainResult
    window: int
    normalisation: str
    preset: Optional[str]
    params: dict
    standardise: bool = False  # calibrate (and serve) with per-entity online standardisation (pipeline/standardise.py)
    refit: Optional[torch.nn.Module] = None  # `model` refitted on the whole train split (train/whole_split.py)

    @property
    def calibrating(self) -> ServedModel:
        """The model fitted without the validation tails: what calibrates on them."""
        return ServedModel(self.model, self.windows.mean, self.windows.std).eval()

    @property
    def served(self) -> ServedModel:
        """What the bundle serves: the refitted model where there is one."""
        return ServedModel(self.final, self.windows.mean, self.windows.std).eval()

    @property
    def final(self) -> torch.nn.Module:
        """The module the bundle holds: `refit` where there is one, else `model`."""
        return self.model if self.refit is None else self.refit

    @property
    def context(self) -> int:
        return model_context(self.model)


def train_model(cfg, series, name: str, *, window: Optional[int] = None, normalisation: Optional[str] = None,
                preset: Optional[str] = None, params: Optional[dict] = None, progress: bool = True) -> Trained:
    """Window, scale and fit one model on the series' training heads (the tails are held out)."""
    tc = cfg.train
    window = window or cfg.model.window
    normalisation = normalisation or tc.normalisation
    preset = preset if preset is not None else cfg.model.preset
    params = dict(cfg.model.params if params is None else params)
    w = make_windows(series, window, tc.train_stride, tc.val_fraction, tc.max_windows, normalisation)
    log.info("training %s on %s: %d train / %d validation windows of %d x %d (scaling %s)", name,
             ",".join(s.entity for s in series), len(w.train), len(w.val), window, len(series[0].channels),
             normalisation)
    seed_everything(tc.seed)  # the initial weights too, so that one config always trains the same model
    model = registry.build(name, len(series[0].channels), window, preset, params, cfg.model.patch.size,
                           cfg.model.patch.stride)
    result = fit(model, w.train, w.val, tc, train_labels=w.train_labels, val_labels=w.val_labels, progress=progress)
    return Trained(name, model, w, result, window, normalisation, preset, params)


def validation_scores(trained: Trained, stride: int) -> list[np.ndarray]:
    """Daemon-like scores of each clean validation tail (raw model scores, before any standardisation)."""
    return [daemon_like_scores(trained.calibrating, tail, trained.window, stride, trained.context)
            for tail in trained.windows.val_tails]


def export_trained(cfg, series, trained: Trained, path, started: float, extra: Optional[dict] = None,
                   source: Optional[dict] = None) -> Bundle:
    """Calibrate on the clean validation tails with the model that never saw them, scored as the daemon scores, and
    write the verified bundle of the served model (the refitted one where there is one)."""
    stride = effective_stride(cfg.scoring.stride, trained.window, trained.context)
    outputs = [daemon_like_outputs(trained.calibrating, tail, trained.window, cfg.scoring.stride, trained.context)
               for tail in trained.windows.val_tails]
    tails = [scores for scores, _ in outputs]
    prior = make_prior(np.concatenate(tails)) if trained.standardise else None
    scores = np.concatenate([standardise_stream(prior, t, stride) for t in tails] if prior else tails)
    calibration = {**calibrate(scores, cfg.threshold.init_level), "stride": stride, "window": trained.window}
    if prior:
        calibration["standardise"] = prior  # the pipeline standardises each entity's scores from this prior
    calibration["attribution"] = fit_record(cfg.train.attribution, trained.calibrating, trained.windows.val_tails,
                                            trained.window, cfg.scoring.stride, trained.context,
                                            np.concatenate([c for _, c in outputs]))
    w, model = trained.windows, trained.final
    training = {**trained.result.as_dict(), "entities": [s.entity for s in series],
                "dataset": (source or {}).get("dataset", cfg.data.dataset), "source": source or {},
                "fingerprint": fingerprint(cfg, trained.name, series),
                "train_windows": int(len(w.train)), "val_windows": int(len(w.val)),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "refit_whole_split": trained.refit is not None, "seconds": time.perf_counter() - started,
                "threads": torch.get_num_threads(), **(extra or {})}
    train_cfg = {**to_dict(cfg)["train"], "normalisation": trained.normalisation}
    config = {"preset": trained.preset, "params": trained.params, "scoring_stride": cfg.scoring.stride,
              "context": trained.context, "train": train_cfg}
    bundle = export_bundle(model, path, channels=series[0].channels, mean=w.mean, std=w.std,
                           calibration=calibration, training=training, config=config,
                           bundle_format=cfg.train.export_format)
    log.info("bundle written to %s (%.1f s)", bundle.path, training["seconds"])
    return bundle
