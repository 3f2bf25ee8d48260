"""Model hot reload: a replaced bundle file (or SIGHUP) swaps the model without stopping the daemon.

The file is checked about once a second (mtime, size and inode, so an atomic `mv` of a new bundle is seen). A file
that changed is loaded once it has looked the same at two checks in a row, so a bundle copied in place (`cp`, `scp`)
is read whole, not refused half-written; SIGHUP loads at once. A new bundle is loaded with the same checks as at
start-up, must have the same channels and window (the input layout; changing it needs a restart) and must score a
test batch finitely; otherwise it is rejected with one log line and the old model keeps serving. The swap happens
between micro-batches, so no record is dropped: windows already cut are scored by the old model, all later ones by
the new. Thresholds restart from the new bundle's calibration (the score scale changed with the model). With
`scoring.compile: aoti` the new bundle is compiled (or found in the cache) on a background thread while the old model
keeps serving, and swapped in only once the compiled model has been verified.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

from ..bundle import Bundle, load_bundle
from ..bundle.probe import check_finite
from ..bundleset import signature as _signature
from ..errors import StreamdetError

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


def install_sighup(stack: ExitStack, request: Callable[[], None]) -> None:
    """SIGHUP asks for a reload (main thread only; threaded callers use `request`)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: request())
    stack.callback(signal.signal, signal.SIGHUP, previous)


class ChangeWatch:
    """When to look at the bundle files again: about every CHECK_INTERVAL_S, or at once after `request` (SIGHUP).
    `look()` returns what the files look like now (their signatures; None: unreadable right now, e.g. mid-replace).
    A change is reported only once it has settled (the same look at two checks in a row): a file still being written
    in place changes between checks and is left alone until the writer is done."""

    def __init__(self, look: Callable[[], Any]):
        self._look = look
        self.seen = look()
        self._settling: Any = None  # a changed look waiting for the next check to confirm it
        self._next_check = time.monotonic() + CHECK_INTERVAL_S
        self._requested = threading.Event()

    def install_sighup(self, stack: ExitStack) -> None:
        install_sighup(stack, self.request)

    def request(self) -> None:
        """Reload on the next check even if the files look unchanged or are still settling (SIGHUP)."""
        self._requested.set()

    def changed(self) -> Optional[tuple[Any, Any]]:
        """(what was seen before, what is seen now) when a check is due and the files changed and settled, or a
        reload was requested; else None."""
        now = time.monotonic()
        forced = self._requested.is_set()
        if not forced and now < self._next_check:
            return None
        self._next_check = now + CHECK_INTERVAL_S
        seen = self._look()
        if not forced:
            if seen is None or seen == self.seen:
                self._settling = None
                return None
            if seen != self._settling:  # new since the last check: it may still be being written
                self._settling = seen
                return None
        self._requested.clear()
        self._settling = None
        before, self.seen = self.seen, seen
        return before, seen


def same_bundle(a: Bundle, b: Bundle) -> bool:
    """Nothing to reload: same weights and same calibration. Training is seeded, so a bundle retrained after only a
    threshold setting changed has the very weights it replaces (same sha256) and a new calibration to serve."""
    return a.sha256 == b.sha256 and a.calibration == b.calibration


class BundleReloader:
    def __init__(self, path: Path, current: Bundle, metrics=None, prepare: Optional[Callable[[Bundle], None]] = None,
                 check: Optional[Callable[[Bundle], None]] = None):
        self.path = Path(path)
        self.prepare = prepare  # makes a verified bundle ready to serve (compiles it); runs on a worker thread
        self.check = check  # raises when the running pipeline cannot serve a bundle (Pipeline.check_replacement)
        self._preparing: Optional[tuple[threading.Thread, Bundle, list]] = None
        self.current = current
        self.metrics = metrics
        self.watch = ChangeWatch(lambda: _signature(self.path))

    def poll(self) -> Optional[Bundle]:
        """A verified new bundle to swap in (call `served` once it serves), or None (nothing changed, or the new
        file was rejected)."""
        if self._preparing is not None:
            return self._prepared()
        if self.watch.changed() is None:
            return None
        try:
            bundle = self._verified(load_bundle(self.path))
            if self.check is not None:
                self.check(bundle)
        except (StreamdetError, OSError, RuntimeError, ValueError) as exc:
            log.error("model reload rejected, the old model keeps serving: %s", exc)
            self._count("rejected")
            return None
        if same_bundle(bundle, self.current):
            return None
        if self.prepare is None:
            return bundle
        failure: list = []
        worker = threading.Thread(target=self._prepare, args=(bundle, failure), name="streamdet-reload", daemon=True)
        self._preparing = (worker, bundle, failure)
        worker.start()
        return None

    def _prepare(self, bundle: Bundle, failure: list) -> None:
        try:
            self.prepare(bundle)
        except Exception as exc:  # reported by _prepared on the loop's thread
            failure.append(exc)

    def _prepared(self) -> Optional[Bundle]:
        """The bundle whose preparation finished (None while it runs, or when it failed: then rejected)."""
        worker, bundle, failure = self._preparing
        if worker.is_alive():
            return None
        self._preparing = None
        if failure:
            log.error("model reload rejected, the old model keeps serving: %s", failure[0])
            self._count("rejected")
            return None
        return bundle

    def served(self, bundle: Bundle) -> None:
        """The daemon now scores with `bundle` (and exports it as model info): only then is the reload counted, so
        that a scrape never sees a reload whose model is not yet the one serving."""
        log.info("model reloaded: %s %s -> %s %s", self.current.model_name, self.current.sha256[:12],
                 bundle.model_name, bundle.sha256[:12])
        self.current = bundle
        self._count("ok")

    def _verified(self, bundle: Bundle) -> Bundle:
        if bundle.channels != self.current.channels:
            raise StreamdetError(f"{self.path}: channels {bundle.channels[:3]}... differ from the running model's "
                                 f"{self.current.channels[:3]}... (input layout must not change)")
        if bundle.window != self.current.window:
            raise StreamdetError(f"{self.path}: window {bundle.window} differs from the running model's "
                                 f"{self.current.window} (restart the daemon to change it)")
        check_finite(bundle, self.path)
        return bundle

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.model_reload(result)
