"""A parsed-array cache for the numeric benchmark CSVs, because parsing text is the slow part of loading.

Parsing all 19 SMD machines' gzip CSVs takes ~10 s of CPU; reading the parsed arrays back takes well under one. Entries
live in $STREAMDET_CACHE (default $XDG_CACHE_HOME/streamdet or ~/.cache/streamdet; `off` disables the cache) and are
keyed by the source file's absolute path, size and modification time, so an edited or replaced file is parsed again.
The cache is best effort: a folder that cannot be written (read-only container) only costs the parse.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
Parsed = tuple[list[str], np.ndarray]


def cache_dir() -> Optional[Path]:
    """The cache folder from the environment, or None when caching is switched off."""
    configured = os.environ.get("STREAMDET_CACHE", "")
    if configured.lower() in {"off", "0", "none"}:
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamdet"


def cached_parse(source: Path, parse: Callable[[Path], Parsed]) -> Parsed:
    """parse(source), or the stored result of an earlier parse of the same unchanged file."""
    folder = cache_dir()
    if folder is None:
        return parse(source)
    entry = folder / f"{_key(source)}.npz"
    stored = _read(entry)
    if stored is not None:
        return stored
    names, values = parse(source)
    _write(entry, names, values)
    return names, values


def _key(source: Path) -> str:
    stat = source.stat()
    ident = f"{FORMAT_VERSION}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{source.name}-{hashlib.sha256(ident.encode()).hexdigest()[:20]}"


def _read(entry: Path) -> Optional[Parsed]:
    if not entry.exists():
        return None
    try:
        with np.load(entry, allow_pickle=False) as stored:
            return stored["names"].tolist(), stored["values"]
    except (OSError, ValueError, KeyError) as exc:  # a truncated or foreign file: parse again
        log.debug("ignoring unreadable cache entry %s: %s", entry, exc)
        return None


def _write(entry: Path, names: list[str], values: np.ndarray) -> None:
    """Write to a temporary name, then rename, so concurrent readers never see half a file."""
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            np.savez(out, names=np.array(names, dtype=str), values=values)
        os.replace(tmp, entry)
    except OSError as exc:
        log.debug("cannot write cache entry %s: %s", entry, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
