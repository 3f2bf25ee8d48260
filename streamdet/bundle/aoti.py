"""AOTInductor: an exported bundle compiled into native code for this host, and the cache of compiled packages.

A compiled package holds machine code for one CPU and links against one libtorch, so it is cached by what it fits:
the bundle file's sha256, the torch version, the machine, and the CPU's instruction sets (torch's dispatch level and a
digest of every /proc/cpuinfo flag). The key is both the file name and a value compiled into the package's metadata;
a stamp file beside it records the package's own sha256. A package is loaded only when the stamp matches its bytes
(a truncated or altered file is never dlopen'ed) and its metadata matches this host's key (one copied from elsewhere
is refused); anything else is deleted and rebuilt. serving.py verifies the loaded package against the exported
program before it scores anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from . import aoti_passes, aoti_runner

log = logging.getLogger(__name__)

KEY_FIELD = "streamdet_cache_key"
PACKAGE_SUFFIX = ".pt2"
STAMP_SUFFIX = ".json"


def host_fingerprint() -> dict:
    """What a compiled package depends on besides the bundle: torch build, machine, instruction sets."""
    return {"torch": torch.__version__, "machine": platform.machine(), "system": platform.system(),
            "isa": torch.backends.cpu.get_cpu_capability(), "cpu_flags": _cpu_flags_digest()}


def cache_key(bundle_file_sha256: str, fingerprint: dict, threads: int) -> str:
    """Compiled code has its OpenMP thread count built in, so the scorer's thread count is part of the key too, and
    the version of streamdet's own compile passes (a better recipe replaces packages built by an older one)."""
    text = json.dumps({"bundle": bundle_file_sha256, "threads": threads, "passes": aoti_passes.VERSION, **fingerprint},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_compiler() -> Optional[str]:
    """None when Inductor finds a C++ compiler, else why not (checked before any work, for one clear log line)."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # InvalidCxxCompiler, or an OSError from probing a broken one
        cxx = os.environ.get("CXX", "g++")
        return f"no working C++ compiler (tried {cxx}; {exc.__class__.__name__})"
    return None


def compile_package(program, path: Path, key: str, threads: int) -> None:
    """Compile `program` for this host into `path` (a .pt2 package), with `key` in its metadata, its parallel loops
    built for `threads` threads (Inductor otherwise takes the compiling thread's count, which need not be the
    scorer's: 2 OpenMP threads spinning beside the decoding thread on 2 cores made the daemon 3x slower), and with
    streamdet's graph passes (aoti_passes.py). 10-300 s."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, nothing a user can act on
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={"aot_inductor.metadata": {KEY_FIELD: key},
                                                                   "cpp.threads": threads,
                                                                   **aoti_passes.inductor_configs()})


class PackageCache:
    """Compiled packages in one folder, `<key>.pt2` plus `<key>.json` (the stamp)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def package(self, key: str) -> Path:
        return self.folder / f"{key}{PACKAGE_SUFFIX}"

    def load(self, key: str, threads: int) -> Optional[Any]:
        """The cached runner for `key`, or None (absent, or refused: then deleted so that it is rebuilt)."""
        package, stamp = self.package(key), self.folder / f"{key}{STAMP_SUFFIX}"
        if not package.exists() and not stamp.exists():
            return None
        try:
            recorded = json.loads(stamp.read_text())["package_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return self.refuse(key, "its stamp is missing or unreadable")
        if not package.is_file() or file_sha256(package) != recorded:
            return self.refuse(key, "its bytes do not match the sha256 recorded when it was built (corrupt)")
        try:
            found = package_metadata(package).get(KEY_FIELD)  # read from the archive: nothing is dlopen'ed yet
        except Exception as exc:  # a package that torch cannot open
            return self.refuse(key, f"it does not load ({exc.__class__.__name__}: {str(exc)[:200]})")
        if found != key:
            return self.refuse(key, f"it was built for another bundle or host (key {found}, this host needs {key})")
        try:
            return load_package(package, threads)
        except Exception as exc:
            return self.refuse(key, f"it does not load ({exc.__class__.__name__}: {str(exc)[:200]})")

    def refuse(self, key: str, reason: str) -> None:
        log.warning("cached AOTInductor package %s refused: %s; rebuilding it", self.package(key), reason)
        self.remove(key)
        return None

    def remove(self, key: str) -> None:
        for suffix in (PACKAGE_SUFFIX, STAMP_SUFFIX):
            (self.folder / f"{key}{suffix}").unlink(missing_ok=True)

    def staging(self, key: str) -> Path:
        """Where a new package is compiled before it is verified and committed (same folder: atomic rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f".{key}.{uuid.uuid4().hex[:12]}.tmp{PACKAGE_SUFFIX}"  # pods may share pids

    def commit(self, key: str, staged: Path, info: dict) -> Path:
        """Move a verified package into place, stamp first so that a reader never trusts a half-written pair."""
        stamp = {"package_sha256": file_sha256(staged), "key": key, "created": time.time(), **info}
        tmp_stamp = staged.with_suffix(".stamp")
        tmp_stamp.write_text(json.dumps(stamp, sort_keys=True))
        os.replace(tmp_stamp, self.folder / f"{key}{STAMP_SUFFIX}")
        os.replace(staged, self.package(key))
        return self.package(key)


def load_package(path: Path, threads: int):
    """The package's runner, running with `threads` torch threads on any thread: one that releases the GIL while the
    model runs when the package allows it (aoti_runner.py), else torch's."""
    return aoti_runner.load(Path(path), threads) or aoti_runner.TorchRunner(
        torch._inductor.aoti_load_package(str(path)), threads)


def package_metadata(path: Path) -> dict:
    """The metadata compiled into a package (with KEY_FIELD), read without loading its code."""
    return torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(path), "model")


def _cpu_flags_digest() -> str:
    """A digest of the CPU's feature flags (Linux); elsewhere the processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    return hashlib.sha256(flags.encode()).hexdigest()[:16]
    except OSError:
        pass
    return platform.processor() or "unknown"
