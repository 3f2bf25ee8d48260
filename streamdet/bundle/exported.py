"""The torch.export bundle format: an ExportedProgram (`torch.export.save`) with streamdet.json as an extra file.

The program is the served model (normalisation inside) traced to an ATen graph with a dynamic batch dimension, so
any batch size scores. Plain torch reads it: `torch.export.load(path, extra_files={"streamdet.json": ""})`, then
`.module()(raw)`. It is also what AOTInductor compiles for the serving host (aoti.py).
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import BundleError
from .meta import META_FILE

FORMAT = "export"
MAX_BATCH = 1 << 20  # upper bound of the dynamic batch dimension (the daemon's max_batch is far below)


def convert(served: nn.Module, window: int, n_channels: int):
    """torch.export.export with a dynamic batch; BundleError saying why when the model cannot be exported."""
    example = torch.randn(2, window, n_channels)  # [B, L, C]
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            # nn.LSTM re-assigns its flat weight list while traced; the weights are exported as parameters anyway
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            program = torch.export.export(served, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # export raises UserError, GuardOnDataDependentSymNode, Unsupported, ...
        model = getattr(served, "model", served)
        raise BundleError(f"cannot export {type(model).__name__} with torch.export: {exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    return program, "export"


def save(program, path: str, meta_text: str) -> None:
    torch.export.save(program, path, extra_files={META_FILE: meta_text})


def load(path: Path):
    """(ExportedProgram, streamdet.json text or '')."""
    extra = {META_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        raise BundleError(f"{path}: not a torch.export bundle ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})") from None
    return program, extra[META_FILE]


def is_export_archive(path: Path) -> bool:
    """A torch.export archive is a zip with an `archive_format` entry; TorchScript zips have none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == "archive_format" or name.endswith("/archive_format") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def program_sha256(program) -> str:
    """A digest of the program's parameters, buffers and tensor constants (name, dtype, shape, bytes)."""
    tensors = dict(program.state_dict)
    tensors.update({f"constant:{k}": v for k, v in program.constants.items() if isinstance(v, torch.Tensor)})
    return tensors_sha256(tensors)


def tensors_sha256(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def runnable(program):
    """The callable that scores: raw [B, L, C] -> (scores [B, L], contributions [B, L, C])."""
    return program.module()
