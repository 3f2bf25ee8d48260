"""Model bundles: one file holding the detector, its normalisation and its calibration, in one of two formats.

- "torchscript" (torchscript.py): a scripted module; plain `torch.jit.load` scores it.
- "export" (exported.py): a `torch.export` ExportedProgram; plain `torch.export.load(...).module()` scores it, and
  the daemon can compile it for its own CPU with AOTInductor (aoti.py, serving.py).

Either way the model takes RAW values [B, L, C] float32 (normalisation is inside, as buffers) and returns
(scores [B, L], contributions [B, L, C]), and its metadata travels in the same file as `streamdet.json`
(docs/internals.md). A bundle is verified against the eager model before it is written, atomically. This package is
the only place that calls `torch.jit`, `torch.export` or AOTInductor.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import BundleError
from . import exported, torchscript
from .meta import META_FILE, REQUIRED_META, SCHEMA_VERSION, build_meta, dumps, parse_meta

__all__ = ["Bundle", "LazyModule", "ServedModel", "export_bundle", "load_bundle", "verify", "weights_sha256", "FORMATS",
           "META_FILE", "REQUIRED_META", "SCHEMA_VERSION"]

FORMATS = (torchscript.FORMAT, exported.FORMAT)
VERIFY_BATCHES = (1, 7)
VERIFY_RTOL = 1e-4
VERIFY_ATOL = 1e-5


def tail_steps(tail, window: int) -> int:
    """How many of a window's last steps a scorer returns: `tail` (the batch's new points) within [1, window]; the
    whole window when None."""
    return window if tail is None else min(max(int(tail), 1), window)


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
    module: Any  # callable raw [B, L, C] -> (scores, contributions): ScriptModule, exported module or AOTI runner
    meta: dict
    path: Path
    program: Any = None  # the ExportedProgram of an "export" bundle (what AOTInductor compiles), else None
    serving: dict = field(default_factory=dict)  # how the daemon runs it (serving.py): compile mode, seconds ...
    file_signature: Any = None  # the file as it was when read (bundleset.signature), for reuse on reload

    @property
    def format(self) -> str:
        return self.meta.get("format", torchscript.FORMAT)

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
    return exported.tensors_sha256(module.state_dict())


def export_bundle(model: nn.Module, path, *, channels: list[str], mean, std, calibration: dict, training: dict,
                  config: Optional[dict] = None, bundle_format: str = torchscript.FORMAT) -> Bundle:
    """Convert `model` with its normalisation to `bundle_format`, verify the file against the eager model, then
    write it atomically."""
    if bundle_format not in FORMATS:
        raise BundleError(f"unknown bundle format {bundle_format!r} (known: {', '.join(FORMATS)})")
    path = Path(path)
    served = ServedModel(model.cpu().eval(), mean, std).eval()
    window = int(getattr(model, "window"))
    if bundle_format == exported.FORMAT:
        converted, method = exported.convert(served, window, len(channels))
        digest, save = exported.program_sha256(converted), exported.save
    else:
        converted, method = torchscript.convert(served, window, len(channels), VERIFY_BATCHES)
        digest, save = weights_sha256(converted), torchscript.save
    meta = build_meta(model, window=window, channels=channels, mean=mean, std=std, calibration=calibration,
                      training=training, config=config or {}, weights_sha256=digest, method=method,
                      bundle_format=bundle_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp.pt2" if bundle_format == exported.FORMAT else ".tmp"  # torch.export.load wants a .pt2 name
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        save(converted, tmp, dumps(meta))
        bundle = load_bundle(tmp)
        verify(served, bundle.module, window, len(channels), mean, std)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    bundle.path = path
    return bundle


def load_bundle(path, lazy: bool = False) -> Bundle:
    """Load and check a bundle of either format; every failure is a BundleError naming the file and the reason.

    `lazy`: a TorchScript bundle's weights and metadata are read and checked now, its code only when the module is
    first called (LazyModule): a bundle scored grouped never needs it (grouped.py). Anything the quick read does
    not expect falls back to the full load."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle file not found (train one with `streamdet train`)")
    if exported.is_export_archive(path):
        program, text = exported.load(path)
        meta = parse_meta(path, text, "torch.export")
        module, actual = exported.runnable(program), exported.program_sha256(program)
    else:
        module = LazyModule.read(path) if lazy else None
        if module is not None:
            meta, actual = parse_meta(path, module.meta_text, "TorchScript"), exported.tensors_sha256(module.state)
            module.meta_text = ""  # parsed: a thousand bundles' texts held 43 MB
        else:
            module, text = torchscript.load(path)
            meta = parse_meta(path, text, "TorchScript")
            actual = weights_sha256(module)
        program = None
    if actual != meta["weights_sha256"]:
        raise BundleError(f"{path}: weights do not match the recorded sha256 (file altered or corrupt)")
    if isinstance(module, LazyModule):
        module.sha256 = actual
    return Bundle(module=module, meta=meta, path=path, program=program)


class LazyModule:
    """A TorchScript bundle's module, loaded on its first call; `state` holds the weights read without it (None
    once a grouped scorer has stacked them: then a call loads them from the file with the module)."""

    def __init__(self, path: Path, state: dict, meta_text: str, code_sha256: str = ""):
        self.path, self.state, self.meta_text = path, state, meta_text
        self.code_sha256 = code_sha256  # bundles with equal code compile alike: one load checks them all
        self.sha256 = ""  # what the module's weights must hash to (set by load_bundle once checked)
        self._module = None

    @classmethod
    def read(cls, path: Path) -> Optional["LazyModule"]:
        try:
            state, text, code = torchscript.read_tensors(path)
        except Exception:  # a truncated zip, an unexpected pickle: the full load says what is wrong
            return None
        return cls(path, state, text, code)

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def load(self):
        if self._module is None:
            module, _ = torchscript.load(self.path)
            if weights_sha256(module) != self.sha256:
                raise BundleError(f"{self.path}: the file changed since its weights were checked")
            self._module = module
        return self._module

    def __call__(self, raw):
        return self.load()(raw)

    def state_dict(self) -> dict:
        return dict(self.state) if self.state is not None else self.load().state_dict()


def verify(eager, loaded, window: int, n_channels: int, mean, std, batches=VERIFY_BATCHES,
           rtol: float = VERIFY_RTOL, atol: float = VERIFY_ATOL,
           names: tuple[str, str] = ("exported", "the eager model"), to_scale: bool = False) -> None:
    """`loaded` must match `eager` on random raw batches of several sizes, finite, contributions >= 0. Elementwise
    (|got - want| <= atol + rtol |want|), or with `to_scale` relative to each output's largest value (atol + rtol
    max |want|): for compiled code, whose reordered float sums differ from eager's by float32 rounding of the
    largest terms wherever an output is a small difference of large ones."""
    gen = torch.Generator().manual_seed(1234)
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
    std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
    for batch in batches:
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
            allowed = atol + rtol * (want.abs().max() if to_scale else want.abs())
            if ((got - want).abs() > allowed).any():
                diff = (got - want).abs().max().item()
                raise BundleError(f"verification: {names[0]} {what} differ from {names[1]} by {diff:.3g} "
                                  f"at batch size {batch}")
        if (got_c < 0).any():
            raise BundleError(f"verification: negative contributions at batch size {batch}")
