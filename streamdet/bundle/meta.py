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
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BundleError(f"{path}: {META_FILE} lacks {', '.join(missing)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {meta['schema_version']} is not supported (this streamdet reads "
                          f"{SCHEMA_VERSION}); re-export the bundle")
    if len(meta["channels"]) != len(meta["normalisation"]["mean"]):
        raise BundleError(f"{path}: {len(meta['channels'])} channels but {len(meta['normalisation']['mean'])} "
                          "normalisation values")
    return meta


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
