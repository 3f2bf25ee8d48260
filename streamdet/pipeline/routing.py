"""Which served bundle scores each entity, and the scorer of each distinct bundle.

The pipeline serves either one bundle (every entity) or a bundle set (a directory: per-entity and per-group
bundles over a fleet default; see streamdet/bundleset.py). Windows of one micro-batch may belong to several
bundles: `score` runs each bundle's rows through its own scorer and puts the results back in batch order, so the
rest of the pipeline sees one batch as before. An entity's bundle also gives its calibration (its thresholds start
from it) and its identity (alerts and checkpoints carry its sha256).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .scorer import Scorer

PER_ENTITY_WARM_UP_BATCH = 2  # per-entity bundles mostly score their own entity's window alone: warm sizes 1 and 2


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
    """Scorers per distinct bundle (by sha256) and each entity's bundle, looked up once and then cached."""

    def __init__(self, bundles: Any, threads: int, max_batch: int):
        self.bundles = as_bundle_set(bundles)
        self._threads, self._max_batch = threads, max_batch
        self._scorers: dict[str, Scorer] = {}
        self._of_entity: dict[str, Any] = {}
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

    def model_of(self, entity: str) -> dict:
        """The identity alerts carry: the name and weights digest of the bundle scoring `entity`."""
        bundle = self.bundle_of(entity)
        return {"name": bundle.model_name, "sha256": bundle.sha256}

    def calibration_of(self, entity: str) -> tuple[str, dict]:
        """(bundle sha256, calibration) of the bundle scoring `entity`: where its thresholds start from."""
        bundle = self.bundle_of(entity)
        return bundle.sha256, bundle.calibration

    def keys_of(self, entities: Sequence[str]) -> Optional[list[str]]:
        """Each entity's bundle sha256, taken on the caller's thread before a batch goes to the model (None when
        one bundle serves everyone)."""
        if self.is_fleet:
            return None
        return [self.bundle_of(entity).sha256 for entity in entities]

    def score(self, windows: np.ndarray, keys: Optional[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """windows [B, L, C] -> (scores [B, L], contributions [B, L, C]), row b by the bundle keys[b]."""
        if keys is None:
            return self._scorers[self.default.sha256].score(windows)
        rows: dict[str, list[int]] = {}
        for b, key in enumerate(keys):
            rows.setdefault(key, []).append(b)
        if len(rows) == 1:
            return self._scorers[keys[0]].score(windows)
        B, L, C = windows.shape
        scores, contrib = np.empty((B, L), np.float32), np.empty((B, L, C), np.float32)
        for key, index in rows.items():
            scores[index], contrib[index] = self._scorers[key].score(windows[index])
        return scores, contrib

    def replace(self, bundles: Any) -> set[str]:
        """Serve a new bundle set (between batches); returns the entities already seen whose bundle changed (their
        thresholds and alert state must restart from the new bundle's calibration)."""
        old = dict(self._of_entity)
        self.bundles = as_bundle_set(bundles)
        self._of_entity = {}
        self._add_scorers()
        live = {bundle.sha256 for bundle in self.bundles.distinct()}
        for key in [key for key in self._scorers if key not in live]:
            del self._scorers[key]
        return {entity for entity, bundle in old.items() if self.bundle_of(entity).sha256 != bundle.sha256}

    def _add_scorers(self) -> None:
        default = self.bundles.default
        for bundle in self.bundles.distinct():
            if bundle.sha256 in self._scorers:
                continue
            scorer = Scorer(bundle.module, 0 if self._scorers else self._threads)  # threads are process-wide
            largest = self._max_batch if bundle is default else min(self._max_batch, PER_ENTITY_WARM_UP_BATCH)
            scorer.warm_up(int(bundle.window), len(bundle.channels), largest)
            self._scorers[bundle.sha256] = scorer
