"""Which bundle scores which entity: one fleet bundle, or a directory of per-entity and per-group bundles.

`model.bundle` may name a bundle file (every entity is scored by it) or a directory laid out as

    DIR/default.pt            the fleet default: scores every entity without a bundle of its own (required)
    DIR/entities/NAME.pt      one entity's bundle; NAME is the entity id, percent-encoded (see `entity_file_name`)
    DIR/groups.yaml           optional: [{pattern: "web-*", bundle: "groups/web.pt"}, ...], fnmatch patterns,
                              the first match wins, paths relative to DIR

An entity is scored by its own bundle, else by the first group whose pattern matches it, else by the default.
`streamdet train --per-entity --out DIR` writes the default and the entities' bundles.

Every bundle must take the default's input layout (channels in the same order, same window), since records are
decoded and windowed once per entity before anyone knows which model will score them. A bundle that cannot be
loaded or does not fit is refused with one line naming the file and the reason, and its entities fall back to the
default (counted in `refused`); only a missing or broken default stops start-up (BundleError, exit code 2).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote

import yaml

from .bundle import Bundle, LazyModule, load_bundle
from .bundle.grouped import group_key
from .errors import BundleError, StreamdetError

log = logging.getLogger(__name__)

DEFAULT_FILE = "default.pt"
ENTITIES_DIR = "entities"
GROUPS_FILE = "groups.yaml"
SUFFIX = ".pt"


def entity_file_name(entity: str) -> str:
    """A file name that holds any entity id (ids may contain '/', ':' or spaces): percent-encoded, plus '.pt'."""
    return quote(entity, safe="-_.@+=,") + SUFFIX


def entity_of_file(name: str) -> str:
    return unquote(name[:-len(SUFFIX)])


@dataclass(frozen=True)
class Group:
    pattern: str
    path: Path


@dataclass
class BundleSet:
    """The bundles being served and the rule that picks one per entity."""

    default: Bundle
    root: Optional[Path] = None  # the directory, None for a single bundle file
    entity_bundles: dict[str, Bundle] = field(default_factory=dict)
    groups: list[tuple[Group, Bundle]] = field(default_factory=list)
    refused: dict[Path, str] = field(default_factory=dict)  # file -> reason it is not served

    @property
    def is_fleet(self) -> bool:
        """One bundle for every entity (a plain file, or a directory holding only its default)."""
        return not self.entity_bundles and not self.groups

    def for_entity(self, entity: str) -> Bundle:
        bundle = self.entity_bundles.get(entity)
        if bundle is not None:
            return bundle
        for group, group_bundle in self.groups:
            if fnmatch.fnmatchcase(entity, group.pattern):
                return group_bundle
        return self.default

    def distinct(self) -> list[Bundle]:
        """Each served bundle once (by sha256), the default first: what needs warming up or compiling."""
        seen: dict[str, Bundle] = {self.default.sha256: self.default}
        for bundle in list(self.entity_bundles.values()) + [b for _, b in self.groups]:
            seen.setdefault(bundle.sha256, bundle)
        return list(seen.values())

    def scored_alone(self) -> list[Bundle]:
        """The default and each bundle that shares its architecture with no other: the bundles scored by their own
        module (what `scoring.compile` compiles). The others are scored in grouped calls that never call theirs."""
        keys = Counter(group_key(bundle) for bundle in self.distinct())
        return [b for b in self.distinct() if b is self.default or keys[group_key(b)] < 2]

    def refuse(self, path: Path, reason: str) -> None:
        """Stop serving the bundle read from `path` (its entities fall back to the default): a check made after
        loading (finite scores, the running stride) found it unfit."""
        self.entity_bundles = {e: b for e, b in self.entity_bundles.items() if Path(b.path) != Path(path)}
        self.groups = [(g, b) for g, b in self.groups if Path(b.path) != Path(path)]
        _refuse(self, Path(path), reason)

    def files(self) -> list[Path]:
        """Every bundle file this set reads (served or refused), for the hot-reload watcher."""
        paths = [self.default.path] + [b.path for b in self.entity_bundles.values()]
        paths += [g.path for g, _ in self.groups] + list(self.refused)
        return sorted({Path(p) for p in paths})


def load_bundle_set(path, reuse: Optional[dict[Path, Bundle]] = None) -> BundleSet:
    """A bundle file or a bundle directory -> BundleSet. A broken default or an empty directory is a BundleError;
    any other broken bundle is refused (logged, listed in `refused`) and its entities use the default. `reuse`:
    bundles already loaded, by file (a reload reads only what changed); each is reused only while its file is
    still the one it was read from."""
    path = Path(path)
    reuse = reuse or {}
    if not path.is_dir():
        return BundleSet(default=load_bundle(path))
    default_path = path / DEFAULT_FILE
    if not default_path.is_file():
        what = "is empty" if not any(path.iterdir()) else f"has no {DEFAULT_FILE}"
        raise BundleError(f"{path}: bundle directory {what} (the fleet default {DEFAULT_FILE} is required; "
                          "write one with `streamdet train --per-entity --out DIR`)")
    bundles = BundleSet(default=_read(default_path, reuse), root=path)
    for file in sorted((path / ENTITIES_DIR).glob("*" + SUFFIX)):
        bundle = _load_fitting(file, bundles, reuse)
        if bundle is not None:
            bundles.entity_bundles[entity_of_file(file.name)] = bundle
    for group in read_groups(path):
        bundle = _load_fitting(group.path, bundles, reuse)
        if bundle is not None:
            bundles.groups.append((group, bundle))
    _check_code(bundles)
    log.info("bundle directory %s: default %s, %d entity bundles, %d group bundles, %d refused", path,
             bundles.default.sha256[:12], len(bundles.entity_bundles), len(bundles.groups), len(bundles.refused))
    return bundles


def read_groups(root: Path) -> list[Group]:
    """groups.yaml -> [Group]; a malformed file is a BundleError naming the entry (a config mistake, not data)."""
    file = root / GROUPS_FILE
    if not file.is_file():
        return []
    try:
        entries = yaml.safe_load(file.read_text()) or []
    except yaml.YAMLError as exc:
        raise BundleError(f"{file}: not valid YAML ({exc})") from None
    if not isinstance(entries, list):
        raise BundleError(f"{file}: expected a list of {{pattern, bundle}} entries")
    groups = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str) or \
                not isinstance(entry.get("bundle"), str):
            raise BundleError(f"{file}: entry {i} needs a text `pattern` and a text `bundle` path")
        groups.append(Group(entry["pattern"], root / entry["bundle"]))
    return groups


def fits(bundle: Bundle, default: Bundle) -> Optional[str]:
    """Why `bundle` cannot serve beside `default` (None when it can): the input layout must be the same."""
    if list(bundle.channels) != list(default.channels):
        return f"channels differ from the default's ({len(bundle.channels)} vs {len(default.channels)}, " \
               f"first difference at {_first_difference(bundle.channels, default.channels)})"
    if bundle.window != default.window:
        return f"window {bundle.window} differs from the default's {default.window}"
    return None


def _check_code(bundles: BundleSet) -> None:
    """Bundles are read lazily (weights and metadata, checked; about 4 ms each instead of 30): one scored grouped
    never runs its own code, but a bundle whose code does not load is refused like any broken file, so that what
    is served never depends on which bundles grouping happens to sample. A bundle alone with its architecture will
    be called on its own: its code is loaded now. The others are checked once per distinct code (its sha256,
    read with the weights): one load for a thousand bundles of one export, refusing every bundle of a code that
    fails, and loading on its own any bundle whose code differs from the rest."""
    alone = {bundle.sha256 for bundle in bundles.scored_alone()}
    lazy = [b for b in bundles.distinct()[1:] if isinstance(b.module, LazyModule)]
    verdict: dict[str, tuple[Optional[str], Path]] = {  # code sha256 -> (why it does not load or None, which file)
        b.module.code_sha256: (None, b.path) for b in lazy if b.module.loaded and b.module.code_sha256}
    keep = {}
    for bundle in lazy:
        code = bundle.module.code_sha256
        if bundle.sha256 in alone or not code or code not in verdict:
            reason = _code_fails(bundle)
            verdict.setdefault(code, (reason, Path(bundle.path)))
        else:
            failed, first = verdict[code]
            reason = failed and f"{bundle.path}: its TorchScript code is the same as {first.name}'s, which does " \
                                f"not load"
        if reason is not None:
            _refuse(bundles, Path(bundle.path), reason)
        keep[bundle.sha256] = reason is None
    bundles.entity_bundles = {e: b for e, b in bundles.entity_bundles.items() if keep.get(b.sha256, True)}
    bundles.groups = [(group, bundle) for group, bundle in bundles.groups if keep.get(bundle.sha256, True)]


def _code_fails(bundle: Bundle) -> Optional[str]:
    """Why the bundle's TorchScript code does not load (None when it does or is loaded already)."""
    if not isinstance(bundle.module, LazyModule):
        return None
    try:
        bundle.module.load()
    except (StreamdetError, OSError) as exc:
        return f"{exc} (its TorchScript code does not load)"
    return None


def _load_fitting(file: Path, bundles: BundleSet, reuse: dict[Path, Bundle]) -> Optional[Bundle]:
    try:
        bundle = _read(file, reuse, lazy=True)
    except (StreamdetError, OSError) as exc:
        return _refuse(bundles, file, str(exc))
    reason = fits(bundle, bundles.default)
    if reason is not None:
        return _refuse(bundles, file, f"{file}: {reason}")
    return bundle


def _read(file: Path, reuse: dict[Path, Bundle], lazy: bool = False) -> Bundle:
    """The bundle in `file`: the one `reuse` offers only while the file is still the one it was read from (same
    signature), else read now. What a caller believes unchanged can be stale (a reload that saw the file change was
    rejected for another reason): an old bundle must never go on standing for a file replaced since."""
    old = reuse.get(file)
    now = signature(file)
    if old is not None and now is not None and old.file_signature == now:
        return old
    bundle = load_bundle(file, lazy=lazy)
    bundle.file_signature = now  # taken before the read: a file replaced during it is read again next time
    return bundle


def _refuse(bundles: BundleSet, file: Path, reason: str) -> None:
    log.error("bundle refused, its entities use the default: %s", reason)
    bundles.refused[file] = reason
    return None


def _first_difference(a, b) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"#{i}: {x!r} vs {y!r}"
    return f"#{min(len(a), len(b))}"


def signature(path: Path):
    """What changes when a bundle file is replaced (atomic mv included): mtime, size, inode; None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
