"""streamdet.json: the metadata every bundle carries, whatever its format (built at export, checked at load)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import orjson
import torch

from ..errors import BundleError

SCHEMA_VERSION = 1
META_FILE = "streamdet.json"
REQUIRED_META = ("schema_version", "model", "window", "channels", "normalisation", "calibration", "training",
                 "versions", "weights_sha256", "export_method", "created")


def build_meta(model, *, window: int, channels: list[str], mean, std, calibration: dict, training: dict,
               config: dict, weights_sha256: str, method: str, bundle_format: str) -> dict:
    """The streamdet.json dict (strict JSON once passed through `dumps`)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "format": bundle_format,
        "model": {"name": getattr(model, "name", type(model).__name__), "preset": config.get("preset"),
                  "hparams": model.hparams() if hasattr(model, "hparams") else {}},
        "window": window,
        "channels": list(channels),
        "normalisation": {"mean": np.asarray(mean, dtype=float).tolist(), "std": np.asarray(std, dtype=float).tolist()},
        "calibration": calibration,
        "training": training,
        "config": config,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                     "streamdet": _streamdet_version()},
        "weights_sha256": weights_sha256,
        "export_method": method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def dumps(meta: dict) -> str:
    return json.dumps(json_safe(meta), allow_nan=False)


def parse_meta(path: Path, text, what: str) -> dict:
    """Check the metadata text read from a `what` file (TorchScript / torch.export); BundleError names the problem."""
    if not text:
        raise BundleError(f"{path}: no {META_FILE} inside: a {what} file, but not a streamdet bundle")
    try:
        meta = orjson.loads(text)  # 0.13 ms where json took 0.8-1.2 (45 KB, mostly calibration scores): per bundle,
        # a thousand per-entity bundles at start-up. It reads what `dumps` writes (no NaN: allow_nan=False).
    except ValueError as exc:
        raise BundleError(f"{path}: {META_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: {META_FILE} is not a JSON object")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BundleError(f"{path}: {META_FILE} lacks {', '.join(missing)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {meta['schema_version']} is not supported (this streamdet reads "
                          f"{SCHEMA_VERSION}); re-export the bundle")
    check_types(path, meta)
    for kind in ("mean", "std"):
        if len(meta["channels"]) != len(meta["normalisation"][kind]):
            raise BundleError(f"{path}: {len(meta['channels'])} channels but {len(meta['normalisation'][kind])} "
                              f"normalisation {kind} values")
    return meta


def check_types(path: Path, meta: dict) -> None:
    """The fields the daemon reads must have the types it reads them as: a hand-edited or foreign streamdet.json is
    refused here, naming the field, not served to fail with a TypeError when its entity scores or alerts."""
    model, norm = meta["model"], meta["normalisation"]
    wrong = [(field, want) for field, ok, want in (
        ("model", isinstance(model, dict) and isinstance(model.get("name"), str), "an object with a text name"),
        ("window", type(meta["window"]) is int and meta["window"] >= 1, "a positive integer"),
        ("channels", isinstance(meta["channels"], list) and all(isinstance(c, str) for c in meta["channels"]),
         "a list of channel names"),
        ("normalisation", isinstance(norm, dict) and all(_numbers(norm.get(k)) for k in ("mean", "std")),
         "an object with mean and std lists of numbers"),
        ("calibration", isinstance(meta["calibration"], dict), "an object"),
        ("weights_sha256", isinstance(meta["weights_sha256"], str), "text"),
    ) if not ok]
    if wrong:
        raise BundleError(f"{path}: {META_FILE} field {wrong[0][0]} is not {wrong[0][1]}")


def _numbers(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def json_safe(value):
    """NaN/inf (e.g. the validation loss of a model that has none) become null: strict JSON, readable anywhere."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _streamdet_version() -> str:
    from .. import __version__

    return __version__
