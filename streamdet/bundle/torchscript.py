"""The TorchScript bundle format: a scripted (or, failing that, traced) module with streamdet.json as an extra file.

TorchScript is deprecated upstream (torch warns on every `torch.jit` call) but is still the format that plain
`torch.jit.load` scores with no Python model code. Its successor is the torch.export format (exported.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import BundleError
from .meta import META_FILE

FORMAT = "torchscript"


def convert(served: nn.Module, window: int, n_channels: int, batches: tuple[int, int]):
    """torch.jit.script; if a model cannot be scripted, trace it (checked at two batch sizes) and say so."""
    try:
        with quiet():
            return torch.jit.script(served), "script"
    except Exception as script_error:  # scripting failures come as several exception types
        example = torch.randn(batches[-1], window, n_channels)
        check = [(torch.randn(batches[0], window, n_channels),)]
        try:
            with quiet(), torch.no_grad():
                return torch.jit.trace(served, example, check_inputs=check), "trace"
        except Exception as trace_error:
            model = getattr(served, "model", served)
            raise BundleError(f"cannot export {type(model).__name__}: scripting failed "
                              f"({str(script_error).splitlines()[0][:200]}), tracing failed "
                              f"({str(trace_error).splitlines()[0][:200]})") from None


def save(module, path: str, meta_text: str) -> None:
    with quiet():
        torch.jit.save(module, path, _extra_files={META_FILE: meta_text})


def load(path: Path):
    """(module in eval mode, streamdet.json text or '')."""
    extra = {META_FILE: ""}
    try:
        with quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for anything that is not a TorchScript zip
        raise BundleError(f"{path}: not a TorchScript bundle ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})") from None
    return module.eval(), extra[META_FILE]


class quiet(warnings.catch_warnings):
    """Silence TorchScript's deprecation warnings (errors still raise)."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        return self
