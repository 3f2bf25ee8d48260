"""How the daemon runs a bundle: as loaded (`scoring.compile: none`) or compiled for this host (`aoti`).

`prepare` replaces `bundle.module` with the AOTInductor runner when it can: from the package cache if a package
fits, else compiled now (tens of seconds). Nothing scores until the runner has matched the exported program on test
batches. When compiling is impossible here (no C++ compiler, an op Inductor cannot lower, a package that does not
verify) the bundle keeps its uncompiled program and one log line says why; the daemon serves either way.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import BundleError
from . import Bundle, aoti, verify

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "aoti")
# The compiled code fuses and reorders float ops. Relative to each output's largest value (verify's to_scale):
# anomaly_transformer's compiled scores differ from the exported program's by up to 0.0013 where scores reach 174
# (elementwise, some small scores differ by more than 1e-4 of themselves), while both lie equally close to the same
# model evaluated in float64 (0.0004 and 0.0009 at batch 1): float32 rounding, not a miscompile.
COMPILE_RTOL = 1e-4
COMPILE_ATOL = 1e-5


def default_cache_folder() -> Path:
    """$STREAMDET_CACHE/aoti (default ~/.cache/streamdet/aoti), beside the data cache."""
    configured = os.environ.get("STREAMDET_CACHE", "")
    if configured and configured.lower() not in {"off", "0", "none"}:
        return Path(configured).expanduser() / "aoti"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamdet" / "aoti"


def prepare(bundle: Bundle, mode: str, cache_folder: Optional[Path] = None, threads: int = 0) -> Bundle:
    """Make `bundle` ready to score under `mode` with `threads` torch threads (0 = torch's current count); records
    what happened in `bundle.serving`."""
    if mode not in COMPILE_MODES:
        raise BundleError(f"scoring.compile: unknown mode {mode!r} (known: {', '.join(COMPILE_MODES)})")
    bundle.serving = {"compile": "none", "source": "", "seconds": 0.0}
    if mode == "none":
        return bundle
    if bundle.program is None:
        return _fallback(bundle, f"{bundle.path} is a {bundle.format} bundle; only an exported bundle "
                                 "(train.export_format: export) can be compiled")
    reason = aoti.missing_compiler()
    if reason:
        return _fallback(bundle, reason)
    started = time.perf_counter()
    fingerprint = aoti.host_fingerprint()
    threads = threads if threads > 0 else torch.get_num_threads()
    key = aoti.cache_key(aoti.file_sha256(bundle.path), fingerprint, threads)
    cache = aoti.PackageCache(cache_folder or default_cache_folder())
    runner = _cached(bundle, cache, key, threads)
    source = "cache"
    if runner is None:
        log.info("compiling %s for this host with AOTInductor (cache key %s); not scoring until it is done",
                 bundle.path.name, key)
        try:
            runner = _compile(bundle, cache, key, fingerprint, threads)
        except Exception as exc:  # Inductor lowering errors, compiler errors, verification failures
            return _fallback(bundle, f"compilation failed ({exc.__class__.__name__}: "
                                     f"{(str(exc).splitlines() or [''])[0][:300]})")
        source = "compiled"
    seconds = time.perf_counter() - started
    bundle.module = runner
    bundle.serving = {"compile": "aoti", "source": source, "seconds": seconds, "key": key, "threads": threads}
    log.info("model %s ready compiled with AOTInductor (%s in %.1f s, package %s)", bundle.model_name,
             "compiled" if source == "compiled" else "loaded from the cache", seconds, cache.package(key))
    return bundle


def _cached(bundle: Bundle, cache: aoti.PackageCache, key: str, threads: int):
    runner = cache.load(key, threads)
    if runner is None:
        return None
    try:
        _check(bundle, runner)
    except BundleError as exc:
        return cache.refuse(key, f"it does not score like the exported program ({exc})")
    return runner


def _compile(bundle: Bundle, cache: aoti.PackageCache, key: str, fingerprint: dict, threads: int):
    """Compile into the cache folder (or a private one when it is not writable), verify, then commit."""
    started = time.perf_counter()
    try:
        staged = cache.staging(key)
    except OSError as exc:
        log.warning("AOTInductor cache %s is not writable (%s): compiling without caching", cache.folder, exc)
        staged = Path(tempfile.mkdtemp(prefix="streamdet-aoti-")) / f"{key}{aoti.PACKAGE_SUFFIX}"
        cache = None
    try:
        aoti.compile_package(bundle.program, staged, key, threads)
        runner = aoti.load_package(staged, threads)
        _check(bundle, runner)
        if cache is not None:
            cache.commit(key, staged, {"fingerprint": fingerprint, "threads": threads, "bundle": str(bundle.path),
                                       "compile_seconds": round(time.perf_counter() - started, 2)})
    finally:
        staged.unlink(missing_ok=True)
    return runner


def _check(bundle: Bundle, runner) -> None:
    verify(bundle.program.module(), runner, bundle.window, len(bundle.channels), bundle.mean, bundle.std,
           rtol=COMPILE_RTOL, atol=COMPILE_ATOL, names=("compiled", "the exported program"), to_scale=True)


def _fallback(bundle: Bundle, reason: str) -> Bundle:
    log.warning("scoring.compile=aoti: cannot compile here, %s; scoring with the uncompiled %s bundle", reason,
                bundle.format)
    bundle.serving = {"compile": "fallback", "source": "", "seconds": 0.0, "reason": reason}
    return bundle


def prepare_all(bundles: list[Bundle], mode: str, cache_folder: Optional[Path] = None,
                tick: Optional[Callable[[], None]] = None, threads: int = 0) -> list[Bundle]:
    """Prepare every bundle, compiling each distinct one (by weights sha256) once; `tick` is called about once a
    second while that runs (the daemon's heartbeat: a compile takes longer than /healthz tolerates silence)."""
    threads = threads if threads > 0 else torch.get_num_threads()  # this thread's count, not the worker's
    done: dict[str, Bundle] = {}
    for bundle in bundles:
        twin = done.get(bundle.sha256)
        if twin is not None:
            bundle.module, bundle.serving = twin.module, dict(twin.serving)
            continue
        _while_ticking(lambda: prepare(bundle, mode, cache_folder, threads), tick)
        done[bundle.sha256] = bundle
    return bundles


def _while_ticking(work: Callable[[], object], tick: Optional[Callable[[], None]]) -> None:
    if tick is None:
        work()
        return
    failure: list[BaseException] = []

    def run():
        try:
            work()
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="streamdet-compile", daemon=True)
    worker.start()
    while worker.is_alive():
        tick()
        worker.join(1.0)
    if failure:
        raise failure[0]
