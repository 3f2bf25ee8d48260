"""Hot reload of a bundle directory: each bundle file is reloaded on its own when it changes.

About once a second (or on SIGHUP) the directory's bundle files and groups.yaml are listed with their signatures
(mtime, size, inode). When any changed, appeared or disappeared, and the listing is the same at the next check (so a
directory being synced is read once the sync is done; SIGHUP does not wait), the set is built again, reusing every
bundle whose file did not change, so replacing one entity's bundle loads one file, not a thousand. A new or replaced
bundle is checked like at start-up (loads, fits the default's layout) and must score a test batch finitely; a bad one
is refused with one log line and its entities keep (or fall back to) the default. A replaced default must keep the
input layout (channels, window), else the whole directory keeps serving as it was (a layout change needs a restart).
The daemon swaps the set in between micro-batches; entities whose bundle changed restart their thresholds from its
calibration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from ..bundleset import (DEFAULT_FILE, ENTITIES_DIR, GROUPS_FILE, SUFFIX, BundleSet, load_bundle_set, signature)
from ..errors import StreamdetError
from .reload import ChangeWatch, check_finite

log = logging.getLogger(__name__)


def snapshot(root: Path) -> dict[Path, tuple]:
    """Signature of every file the directory's bundle set is read from."""
    files = [root / DEFAULT_FILE, root / GROUPS_FILE] + sorted((root / ENTITIES_DIR).glob("*" + SUFFIX))
    if (root / GROUPS_FILE).is_file():
        files += sorted(p for p in root.rglob("*" + SUFFIX) if p.parent.name != ENTITIES_DIR)
    return {path: sig for path in dict.fromkeys(files) if (sig := signature(path)) is not None}


class BundleDirReloader:
    """Same contract as reload.BundleReloader (poll -> a verified new set or None; served(set) once it serves; `watch`
    says when to look: reload.ChangeWatch)."""

    def __init__(self, current: BundleSet, metrics=None, prepare: Optional[Callable[[list], None]] = None,
                 check: Optional[Callable[[Any], None]] = None):
        self.root = Path(current.root)
        self.current = current
        self.metrics = metrics
        self.prepare = prepare  # makes new bundles ready to serve (compiles them)
        self.check = check  # raises when the running pipeline cannot serve a bundle (Pipeline.check_replacement)
        self.watch = ChangeWatch(lambda: snapshot(self.root))

    def poll(self) -> Optional[BundleSet]:
        change = self.watch.changed()
        if change is None:
            return None
        before, seen = change
        changed = {path for path, sig in seen.items() if before.get(path) != sig}
        unchanged = {Path(b.path): b for b in self._served() if Path(b.path) not in changed}
        try:
            new = load_bundle_set(self.root, reuse=unchanged)
            self._check_layout(new)
            for bundle in {Path(b.path): b for b in self._all(new) if Path(b.path) in changed}.values():
                self._check_changed(new, bundle)
            fresh = [b for b in new.distinct() if Path(b.path) in changed]
            if self.prepare is not None:  # compiles what is scored by its own module (not grouped bundles)
                alone = {b.sha256 for b in new.scored_alone()}
                self.prepare([b for b in fresh if b.sha256 in alone])
        except (StreamdetError, OSError, RuntimeError, ValueError) as exc:
            log.error("bundle directory reload rejected, the served bundles stay: %s", exc)
            self._count("rejected")
            return None
        for path in set(new.refused) & changed:
            self._count("rejected")
        if _shas(new) == _shas(self.current):
            return None
        return new

    def _check_changed(self, new: BundleSet, bundle) -> None:
        """A changed bundle that scores non-finite values or that the running pipeline cannot serve is refused alone
        (its entities fall back to the default), as a broken file is; a default that fails rejects the reload."""
        try:
            check_finite(bundle, bundle.path)
            if self.check is not None:
                self.check(bundle)
        except (StreamdetError, RuntimeError, ValueError) as exc:
            if Path(bundle.path) == Path(new.default.path):
                raise
            new.refuse(Path(bundle.path), str(exc))

    @staticmethod
    def _all(bundles: BundleSet) -> list:
        return [bundles.default] + list(bundles.entity_bundles.values()) + [b for _, b in bundles.groups]

    def served(self, bundles: BundleSet) -> None:
        log.info("bundle directory reloaded: %d bundles served, %d refused", len(bundles.distinct()),
                 len(bundles.refused))
        self.current = bundles
        self._count("ok")

    def _served(self) -> list:
        return self._all(self.current)

    def _check_layout(self, new: BundleSet) -> None:
        old = self.current.default
        if list(new.default.channels) != list(old.channels) or new.default.window != old.window:
            raise StreamdetError(f"{new.default.path}: the new default has another input layout (channels or "
                                 "window); restart the daemon to change it")

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.model_reload(result)


def _shas(bundles: BundleSet) -> tuple:
    return (bundles.default.sha256, tuple(sorted((e, b.sha256) for e, b in bundles.entity_bundles.items())),
            tuple((g.pattern, b.sha256) for g, b in bundles.groups))
