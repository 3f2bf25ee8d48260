"""What a bundle was trained from, as one digest: lets `train --per-entity` skip bundles that are up to date."""

from __future__ import annotations

import hashlib

import orjson

from ..config import to_dict


def fingerprint(cfg, model_name: str, series: list) -> str:
    """sha256 of what a bundle is trained from: the entities' train data and channels, the model and the training
    and scoring settings that shape the weights or the calibration."""
    settings = to_dict(cfg)
    digest = hashlib.sha256(orjson.dumps({
        "model": model_name, "model_settings": model_settings(settings),
        "train": settings["train"], "stride": cfg.scoring.stride, "init_level": cfg.threshold.init_level,
    }, option=orjson.OPT_SORT_KEYS))
    for s in series:
        digest.update(s.entity.encode() + b"\0" + "\0".join(s.channels).encode())
        digest.update(s.train.tobytes())
    return digest.hexdigest()


def model_settings(settings: dict) -> dict:
    """The whole model section but its name (given apart: `--model` overrides it) and the bundle path: preset,
    window and params, and also patching, score engineering and the auto candidates, which shape the weights or
    the calibration as much (left out, a run after changing them kept every stale bundle as up to date)."""
    return {k: v for k, v in settings["model"].items() if k not in ("name", "bundle")}
