"""Model bundles: one TorchScript file holding the detector, its normalisation and its calibration.

This is the only module that calls `torch.jit` (TorchScript is deprecated upstream but is still the one format that a
plain `torch.jit.load` can score with no Python model code; keeping every call here makes a later move to
`torch.export` a one-file change).

The scripted module takes RAW values [B, L, C] float32 (normalisation is inside, as buffers) and returns
(scores [B, L], contributions [B, L, C]). Its metadata travels in the same file as `streamdet.json`
(docs/internals.md). A bundle is verified against the eager model before it is written, atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .errors import BundleError

SCHEMA_VERSION = 1
META_FILE = "streamdet.json"
REQUIRED_META = ("schema_version", "model", "window", "channels", "normalisation", "calibration", "training",
                 "versions", "weights_sha256", "export_method", "created")
VERIFY_BATCHES = (1, 7)
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-5


class ServedModel(nn.Module):
    """What the daemon runs: normalise raw values with the training statistics, then the detector."""

    def __init__(self, model: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def forward(self, raw: Tensor) -> Tuple[Tensor, Tensor]:
        x = (raw - self.mean) / self.std  # [B, L, C]
        return self.model(x)


@dataclass
class Bundle:
    module: Any  # torch.jit.ScriptModule in eval mode
    meta: dict
    path: Path

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def calibration(self) -> dict:
        return self.meta["calibration"]

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.meta["normalisation"]["mean"], dtype=np.float32)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.meta["normalisation"]["std"], dtype=np.float32)


def weights_sha256(module: nn.Module) -> str:
    """A digest of every parameter and buffer (name, dtype, shape, bytes), stable across save and load."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def export_bundle(model: nn.Module, path, *, channels: list[str], mean, std, calibration: dict, training: dict,
                  config: Optional[dict] = None) -> Bundle:
    """Script `model` with its normalisation, verify the file against the eager model, then write it atomically."""
    path = Path(path)
    served = ServedModel(model.cpu().eval(), mean, std).eval()
    window = int(getattr(model, "window"))
    compiled, method = _compile(served, window, len(channels))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": getattr(model, "name", type(model).__name__), "preset": (config or {}).get("preset"),
                  "hparams": model.hparams() if hasattr(model, "hparams") else {}},
        "window": window,
        "channels": list(channels),
        "normalisation": {"mean": np.asarray(mean, dtype=float).tolist(), "std": np.asarray(std, dtype=float).tolist()},
        "calibration": calibration,
        "training": training,
        "config": config or {},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                     "streamdet": _streamdet_version()},
        "weights_sha256": weights_sha256(compiled),
        "export_method": method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _quiet():
            torch.jit.save(compiled, tmp, _extra_files={META_FILE: json.dumps(_json_safe(meta), allow_nan=False)})
        bundle = load_bundle(tmp)
        verify(served, bundle.module, window, len(channels), mean, std)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    bundle.path = path
    return bundle


def load_bundle(path) -> Bundle:
    """Load and check a bundle; every failure is a BundleError naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle file not found (train one with `streamdet train`)")
    extra = {META_FILE: ""}
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for anything that is not a TorchScript zip
        raise BundleError(f"{path}: not a TorchScript bundle ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})") from None
    meta = _parse_meta(path, extra[META_FILE])
    actual = weights_sha256(module)
    if actual != meta["weights_sha256"]:
        raise BundleError(f"{path}: weights do not match the recorded sha256 (file altered or corrupt)")
    module.eval()
    return Bundle(module=module, meta=meta, path=path)


def _parse_meta(path: Path, text) -> dict:
    if not text:
        raise BundleError(f"{path}: no {META_FILE} inside: a TorchScript file, but not a streamdet bundle")
    try:
        meta = json.loads(text)
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


def verify(eager: nn.Module, loaded, window: int, n_channels: int, mean, std) -> None:
    """The reloaded module must match the eager one on random raw batches of several sizes, finite and >= 0."""
    gen = torch.Generator().manual_seed(1234)
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
    std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
    for batch in VERIFY_BATCHES:
        raw = mean_t + std_t * torch.randn(batch, window, n_channels, generator=gen)  # [B, L, C]
        with torch.inference_mode():
            want_s, want_c = eager(raw)
            got_s, got_c = loaded(raw)
        for what, got, want, shape in (("scores", got_s, want_s, (batch, window)),
                                       ("contributions", got_c, want_c, (batch, window, n_channels))):
            if tuple(got.shape) != shape:
                raise BundleError(f"verification: {what} have shape {tuple(got.shape)}, expected {shape}")
            if not torch.isfinite(got).all():
                raise BundleError(f"verification: non-finite {what} at batch size {batch}")
            if not torch.allclose(got, want, rtol=VERIFY_RTOL, atol=VERIFY_ATOL):
                diff = (got - want).abs().max().item()
                raise BundleError(f"verification: exported {what} differ from the eager model by {diff:.3g} at "
                                  f"batch size {batch}")
        if (got_c < 0).any():
            raise BundleError(f"verification: negative contributions at batch size {batch}")


def _compile(served: ServedModel, window: int, n_channels: int):
    """torch.jit.script; if a model cannot be scripted, trace it (checked at two batch sizes) and say so."""
    try:
        with _quiet():
            return torch.jit.script(served), "script"
    except Exception as script_error:  # scripting failures come as several exception types
        example = torch.randn(VERIFY_BATCHES[-1], window, n_channels)
        check = [(torch.randn(VERIFY_BATCHES[0], window, n_channels),)]
        try:
            with _quiet(), torch.no_grad():
                return torch.jit.trace(served, example, check_inputs=check), "trace"
        except Exception as trace_error:
            raise BundleError(f"cannot export {type(served.model).__name__}: scripting failed "
                              f"({str(script_error).splitlines()[0][:200]}), tracing failed "
                              f"({str(trace_error).splitlines()[0][:200]})") from None


def _json_safe(value):
    """NaN/inf (e.g. the validation loss of a model that has none) become null: strict JSON, readable anywhere."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _streamdet_version() -> str:
    from . import __version__

    return __version__


class _quiet(warnings.catch_warnings):
    """Silence TorchScript's deprecation warnings (errors still raise)."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        return self
