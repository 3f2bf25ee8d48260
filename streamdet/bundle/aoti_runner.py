"""Run a compiled AOTInductor package without holding the GIL while its native code runs.

torch's own runner (`aoti_load_package`) keeps the GIL for the whole model call (its pybind method does not release
it; measured: a Python thread beside one call stood still for 89% of it, 11% beside this runner). With
`scoring.overlap` the model runs on a worker thread while the main thread decodes the next records, so a runner that
keeps the GIL stalls decoding for as long as the model runs.

This runner calls the package's C entry points (the ABI in torch/csrc/inductor/aoti_runtime/interface.h) through
ctypes, which releases the GIL for the call, exactly as torch's runner calls them from C++: the same container, the
same input and output tensor handles. It serves only packages that need nothing else from torch's runner: one
wrapper library with its weights compiled in and no ops that call back into Python-side kernels (a proxy executor);
for any other package `load` returns None and the caller uses torch's runner (wrapped in OnEveryThread).

Both set the calling thread's torch thread count before their first call on it. The compiled code calls MKL for its
matrix products directly, and MKL keeps its thread count per thread: a thread that torch.set_num_threads never ran on
(the daemon's inference thread) runs MKL with one thread per core. On 2 cores that team fought the decoding thread
(lstm_ae, 100 small products per window: the pipeline scored at 1/10 of TorchScript's rate; 1.3x it once set).
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Optional

import torch
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

MODEL_FOLDER = "/data/aotinductor/model/"
# files that a package of a self-contained model holds in MODEL_FOLDER; anything else (weights kept outside the
# library, an extern-kernel list for the proxy executor) needs torch's runner
SELF_CONTAINED_SUFFIXES = (".so", ".cpp", "_metadata.json")

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype, _capsule_new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def load(package: Path, threads: int) -> Optional["ReleasingRunner"]:
    """A GIL-releasing runner for `package`, or None (with the reason logged) when it needs torch's runner."""
    with zipfile.ZipFile(package) as archive:
        files = [name for name in archive.namelist() if MODEL_FOLDER in name]
        libraries = [name for name in files if name.endswith(".so")]
        others = [name for name in files if not name.endswith(SELF_CONTAINED_SUFFIXES)]
        wrappers = [name for name in files if name.endswith(".wrapper.cpp")]
        calls_back = any(b"proxy_executor->call_function" in archive.read(name) for name in wrappers)
        if len(libraries) != 1 or others or len(wrappers) != 1 or calls_back:
            log.info("%s needs torch's AOTInductor runner (holds the GIL while it runs): %s", package.name,
                     "it calls kernels through the proxy executor" if calls_back else
                     f"its model files are {sorted(Path(n).name for n in files)}")
            return None
        folder = tempfile.mkdtemp(prefix="streamdet-aoti-so-")
        try:
            library = ctypes.CDLL(archive.extract(libraries[0], folder))  # mapped: the file can go
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return ReleasingRunner(library, threads)


class OnEveryThread:
    """Sets torch's thread count (MKL's included) on each thread that calls the runner, before its first call."""

    def __init__(self, threads: int):
        self.threads = threads
        self._seen = threading.local()

    def _on_this_thread(self) -> None:
        if not getattr(self._seen, "set", False):
            torch.set_num_threads(self.threads)  # the process-wide count stays the scorer's; MKL's is per thread
            self._seen.set = True


class TorchRunner(OnEveryThread):
    """torch's runner (holds the GIL while it runs), with the thread count set per thread."""

    def __init__(self, runner, threads: int):
        super().__init__(threads)
        self.runner = runner

    def __call__(self, *inputs: torch.Tensor):
        self._on_this_thread()
        return self.runner(*inputs)


class ReleasingRunner(OnEveryThread):
    """Callable like torch's runner: tensors in, the model's outputs (its pytree) out."""

    def __init__(self, library: ctypes.CDLL, threads: int):
        super().__init__(threads)
        self._library = library
        self._handle = ctypes.c_void_p()
        self._check(library.AOTInductorModelContainerCreateWithDevice(
            ctypes.byref(self._handle), ctypes.c_size_t(1), b"cpu", None), "create the model")
        count = ctypes.c_size_t()
        self._check(library.AOTInductorModelContainerGetNumOutputs(self._handle, ctypes.byref(count)), "outputs")
        self._n_outputs = count.value
        in_spec, out_spec = ctypes.c_char_p(), ctypes.c_char_p()
        self._check(library.AOTInductorModelContainerGetCallSpec(self._handle, ctypes.byref(in_spec),
                                                                 ctypes.byref(out_spec)), "call spec")
        self._out_spec = pytree.treespec_loads(out_spec.value.decode())
        self._run = library.AOTInductorModelContainerRun  # a ctypes.CDLL call releases the GIL while it runs
        self._run.restype = ctypes.c_int32
        self._run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]

    def __call__(self, *inputs: torch.Tensor):
        self._on_this_thread()
        # new tensor handles that the container steals; the outputs' handles are stolen back into tensors
        capsules = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors([x.contiguous() for x in inputs])
        handles = (ctypes.c_void_p * len(capsules))(*[_capsule_pointer(c, None) for c in capsules])
        outputs = (ctypes.c_void_p * self._n_outputs)()
        self._check(self._run(self._handle, handles, len(capsules), outputs, self._n_outputs, None, None), "run")
        tensors = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(
            [_capsule_new(pointer, None, None) for pointer in outputs])
        return pytree.tree_unflatten(tensors, self._out_spec)

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._library.AOTInductorModelContainerDelete(handle)

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            message = ctypes.c_char_p()
            self._library.AOTInductorGetLastError(ctypes.byref(message))
            detail = (message.value or b"").decode(errors="replace")[:300]
            raise RuntimeError(f"AOTInductor package: cannot {what} (error {code}{': ' + detail if detail else ''})")
