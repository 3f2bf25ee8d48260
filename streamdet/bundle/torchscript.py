"""The TorchScript bundle format: a scripted (or, failing that, traced) module with streamdet.json as an extra file.

TorchScript is deprecated upstream (torch warns on every `torch.jit` call) but is still the format that plain
`torch.jit.load` scores with no Python model code. Its successor is the torch.export format (exported.py).
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import warnings
import zipfile
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


def script_function(fn):
    """torch.jit.script of a plain function (a loop torch runs without the GIL: bundle/grouped_lstm_ae.py)."""
    with quiet():
        return torch.jit.script(fn)


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


def read_tensors(path: Path) -> tuple[dict, str, str]:
    """(parameters and buffers by state-dict name, streamdet.json text, sha256 of the module's code) read straight
    from the archive, without compiling the module's code: about 4 ms instead of torch.jit.load's 25-30 ms (which
    parses the code of every bundle anew). For bundles scored grouped, whose code is the registry's (grouped.py);
    the caller checks the weights sha256, and anything unexpected raises (the caller then loads the module in
    full). The code's digest lets a caller compile one bundle per distinct code instead of every one."""
    with zipfile.ZipFile(io.BytesIO(Path(path).read_bytes())) as archive:  # one read: a bundle is ~100 KB, and
        # zipfile reading each of its ~30 entries from the file took 110 small reads and seeks per bundle
        pickled = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        prefix = pickled[:-len("data.pkl")]
        root = _TensorsOnly(io.BytesIO(archive.read(pickled)), archive, prefix).load()
        meta = archive.read(prefix + "extra/" + META_FILE).decode()
        code = _code_sha256(archive, prefix)
    if not isinstance(root, _Scripted):
        raise BundleError(f"{path}: the archive's root is not a module")
    return _state(root, "", {}), meta, code


def _code_sha256(archive: zipfile.ZipFile, prefix: str) -> str:
    """Digest of the archive's code and constants (each entry read, so a damaged one fails its zip checksum here);
    the debug tables, which hold per-file source positions, are read but not hashed."""
    digest = hashlib.sha256()
    for name in sorted(archive.namelist()):
        inside = name[len(prefix):]
        if inside.startswith("code/") or inside == "constants.pkl":
            content = archive.read(name)
            if not inside.endswith(".debug_pkl"):
                digest.update(inside.encode() + b"\0" + content)
    return digest.hexdigest()


class _Scripted:
    """Any scripted module or object of the archive: its attributes, as pickled."""


def _state(obj: _Scripted, prefix: str, out: dict) -> dict:
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Scripted):
            _state(value, f"{prefix}{name}.", out)
    return out


class _TensorsOnly(pickle.Unpickler):
    """Unpickles a TorchScript data.pkl into plain objects and tensors; no other global is resolved."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _Scripted
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch.jit._pickle":  # type tags and typed lists: the value itself
            return lambda value, *tag: value
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        kind, storage, key, _location, numel = pid
        data = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
        return torch.frombuffer(data, dtype=_STORAGE_DTYPES[storage]) if numel else \
            torch.empty(0, dtype=_STORAGE_DTYPES[storage])


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


def _rebuild_tensor(storage, offset, size, stride, *ignored):
    return torch.as_strided(storage, size, stride, offset)
