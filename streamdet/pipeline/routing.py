"""Which served bundle scores each entity, and the scorer of each distinct bundle.

The pipeline serves either one bundle (every entity) or a bundle set (a directory: per-entity and per-group
bundles over a fleet default; see streamdet/bundleset.py). Windows of one micro-batch may belong to several
bundles: `score` runs each bundle's rows through its own scorer and puts the results back in batch order, so the
rest of the pipeline sees one batch as before. An entity's bundle also gives its calibration (its thresholds start
from it) and its identity (alerts and checkpoints carry its sha256).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Optional, Sequence

import numpy as np

from ..bundle import tail_steps
from ..bundle.probe import check_finite
from ..errors import StreamdetError
from .scorer import Scorer, grouped_scorers

log = logging.getLogger(__name__)

PER_ENTITY_WARM_UP_BATCH = 2  # per-entity bundles mostly score their own entity's window alone: warm sizes 1 and 2
OWN_CALL_ROWS = 32  # a grouped bundle with this many rows in a batch gets a call of its own: one batched model beats
                    # gathering each row's copy of the same weights


class SingleBundle:
    """A plain bundle seen as a bundle set of one (what `model.bundle: file.pt` serves)."""

    def __init__(self, bundle: Any):
        self.default = bundle
        self.is_fleet = True

    def for_entity(self, entity: str) -> Any:
        return self.default

    def distinct(self) -> list:
        return [self.default]


def as_bundle_set(bundles: Any):
    """A bundle set as it is, a single bundle wrapped as a set of one."""
    return bundles if hasattr(bundles, "for_entity") else SingleBundle(bundles)


class ModelRouter:
    """Scorers per distinct bundle (by sha256) or per group of bundles of one architecture, and each entity's
    bundle, looked up once and then cached. `calls` counts model calls by kind ("bundle": one bundle's own module,
    "grouped": one call for several bundles, "member": one grouped bundle's eager model on many rows of its own);
    `ungrouped` names the bundles that could share a call but cannot (logged once per group when grouping is
    attempted). A bundle that scores its training mean with non-finite values is refused (bundle/probe.py)."""

    def __init__(self, bundles: Any, threads: int, max_batch: int):
        self.bundles = as_bundle_set(bundles)
        self._threads, self._max_batch = threads, max_batch
        self._scorers: dict[str, Scorer] = {}
        self._grouped: dict[str, tuple[Any, int]] = {}  # sha256 -> (its group's GroupedScorer, its place in it)
        self._by_sha: dict[str, Any] = {}
        self._of_entity: dict[str, Any] = {}
        self.calls: Counter = Counter()
        self.ungrouped: dict[str, str] = {}
        self._add_scorers()

    @property
    def default(self) -> Any:
        return self.bundles.default

    @property
    def is_fleet(self) -> bool:
        return bool(self.bundles.is_fleet)

    def bundle_of(self, entity: str) -> Any:
        bundle = self._of_entity.get(entity)
        if bundle is None:
            bundle = self._of_entity[entity] = self.bundles.for_entity(entity)
        return bundle

    def forget(self, entity: str) -> None:
        """An entity that left: its bundle is looked up again should it come back."""
        self._of_entity.pop(entity, None)

    def model_of(self, entity: str) -> dict:
        """The identity alerts carry: the name and weights digest of the bundle scoring `entity`."""
        bundle = self.bundle_of(entity)
        return {"name": bundle.model_name, "sha256": bundle.sha256}

    def calibration_of(self, entity: str) -> tuple[str, dict]:
        """(bundle sha256, calibration) of the bundle scoring `entity`: where its thresholds start from."""
        bundle = self.bundle_of(entity)
        return bundle.sha256, bundle.calibration

    def calibrations(self) -> list[tuple[str, dict]]:
        """(sha256, calibration) of each served bundle: what the thresholds of their entities start from."""
        return [(bundle.sha256, bundle.calibration) for bundle in self.bundles.distinct()]

    def keys_of(self, entities: Sequence[str]) -> Optional[list[str]]:
        """Each entity's bundle sha256, taken on the caller's thread before a batch goes to the model (None when
        one bundle serves everyone)."""
        if self.is_fleet:
            return None
        return [self.bundle_of(entity).sha256 for entity in entities]

    def score(self, windows: np.ndarray, keys: Optional[list[str]], tail: Optional[int] = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """windows [B, L, C] -> (scores [B, T], contributions [B, T, C]) of each window's last T = `tail` steps (the
        points the batch scores; all L when None), row b by the bundle keys[b]. Grouped lstm_ae computes only
        those steps (bundle/grouped_lstm_ae.py)."""
        if keys is None:
            return self._own(self.default.sha256, windows, tail)
        rows: dict[str, list[int]] = {}
        for b, key in enumerate(keys):
            rows.setdefault(key, []).append(b)
        if len(rows) == 1:
            return self._own(keys[0], windows, tail)
        B, L, C = windows.shape
        T = tail_steps(tail, L)
        scores, contrib = np.empty((B, T), np.float32), np.empty((B, T, C), np.float32)
        shared: dict[int, tuple[Any, list[int], list[int]]] = {}  # id(group scorer) -> (scorer, rows, members)
        for key, index in rows.items():
            member = self._grouped.get(key)
            if member is None or len(index) >= OWN_CALL_ROWS:
                scores[index], contrib[index] = self._own(key, windows[index], tail)
                continue
            scorer, place = member
            _, group_rows, members = shared.setdefault(id(scorer), (scorer, [], []))
            group_rows += index
            members += [place] * len(index)
        for scorer, index, members in shared.values():
            scores[index], contrib[index] = scorer.score(windows[index], members, tail)
            self.calls["grouped"] += 1
        return scores, contrib

    def grouped_count(self) -> int:
        """Served bundles scored in grouped calls."""
        return len(self._grouped)

    def grouped_bytes(self) -> int:
        """Memory of the grouped bundles' stacked weights."""
        return sum(scorer.group.nbytes for scorer in {id(s): s for s, _ in self._grouped.values()}.values())

    def replace(self, bundles: Any) -> set[str]:
        """Serve a new bundle set (between batches); returns the entities already seen whose bundle changed (their
        thresholds and alert state must restart from the new bundle's calibration). Groups are rebuilt, reusing
        the stacked weights of unchanged bundles."""
        old = dict(self._of_entity)
        self.bundles = as_bundle_set(bundles)
        self._of_entity = {}
        self._add_scorers()
        for key in [key for key in self._scorers if key not in self._by_sha]:
            del self._scorers[key]
        return {entity for entity, bundle in old.items() if self.bundle_of(entity).sha256 != bundle.sha256}

    def _own(self, key: str, windows: np.ndarray, tail: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        """One bundle's own call (a batch of one grouped bundle only: its eager call in the group)."""
        scorer = self._scorers.get(key)
        if scorer is None:
            group, place = self._grouped[key]
            self.calls["member"] += 1
            return group.score_member(windows, place, tail)
        self.calls["bundle"] += 1
        return scorer.score(windows, tail)

    def _refuse(self, bundle: Any, why: str) -> None:
        """A bundle that scores non-finite values is not served: its entities fall back to the default (bundle
        directories); a default that does so stops the start or rejects the reload."""
        if bundle is self.bundles.default or self.is_fleet:
            raise StreamdetError(why)
        self.bundles.refuse(bundle.path, why)

    def _add_scorers(self) -> None:
        distinct = self.bundles.distinct()
        self._by_sha = {bundle.sha256: bundle for bundle in distinct}
        default = self.bundles.default
        if not self.is_fleet:
            previous = list({id(scorer): scorer for scorer, _ in self._grouped.values()}.values())
            self._grouped, self.ungrouped, broken = grouped_scorers(distinct, previous)
            for sha, why in broken.items():
                self._refuse(self._by_sha[sha], why)
        for bundle in self.bundles.distinct():
            if bundle.sha256 in self._scorers or (bundle is not default and bundle.sha256 in self._grouped):
                continue
            try:
                check_finite(bundle, bundle.path)
            except StreamdetError as exc:
                self._refuse(bundle, str(exc))
                continue
            scorer = Scorer(bundle.module, 0 if self._scorers else self._threads)  # threads are process-wide
            largest = self._max_batch if bundle is default else min(self._max_batch, PER_ENTITY_WARM_UP_BATCH)
            scorer.warm_up(int(bundle.window), len(bundle.channels), largest)
            self._scorers[bundle.sha256] = scorer
