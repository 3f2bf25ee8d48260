"""`streamdet train --per-entity --out DIR`: a bundle directory with a fleet default and one bundle per entity.

The default is trained on every entity (it scores entities that have no bundle of their own, e.g. a host added
after training); each entity's bundle on that entity's train split alone. Entities train in parallel worker
processes (spawned, each with its share of the cores). The run is resumable: a bundle whose recorded fingerprint
(training data, model and training settings; see `fingerprint`) equals what it would be trained on now is kept,
so an interrupted run or a run after adding hosts trains only what is missing or stale. Bundles are written
atomically, so a daemon hot-reloading the directory never sees half a file. With `--from-topic` the entities and
their rows come from the metrics topic's history: run on a timer with `--since`, it retrains every host whose recent
rows changed, and the daemon reloads each new file (README, "Retraining on a schedule").
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..bundle import load_bundle
from ..bundleset import DEFAULT_FILE, ENTITIES_DIR, entity_file_name
from ..data import list_entities, load_series
from ..errors import StreamdetError
from .fingerprint import fingerprint

log = logging.getLogger(__name__)


@dataclass
class PerEntityReport:
    out: Path
    trained: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # up to date already (resumed)
    failed: dict[str, str] = field(default_factory=dict)  # entity -> reason


def is_current(path: Path, expected: str) -> bool:
    """Whether `path` holds a loadable bundle trained from exactly this fingerprint."""
    if not path.is_file():
        return False
    try:
        return load_bundle(path).meta.get("training", {}).get("fingerprint") == expected
    except StreamdetError:
        return False  # corrupt or foreign: train it again


def train_per_entity(cfg, out, *, model_name: Optional[str] = None, entities: Optional[list[str]] = None,
                     workers: int = 0, progress: bool = True, series: Optional[list] = None,
                     source: Optional[dict] = None) -> PerEntityReport:
    """Train the default (all entities) and each entity's bundle into `out`, skipping the up-to-date ones.
    `series` (the metrics topic's history: `--from-topic`) replaces the configured dataset, `source` says where it
    came from (kept in each bundle)."""
    name = model_name or cfg.model.name
    given = {s.entity: s for s in series} if series is not None else None
    entities = entities or (list(given) if given is not None else list_entities(cfg))
    if given is not None:
        missing = sorted(set(entities) - set(given))
        if missing:
            raise StreamdetError(f"--entities names entities the history has no rows for: {missing}")

    def data_of(job: Optional[str]) -> list:  # the default (None) is trained on every entity
        names = entities if job is None else [job]
        return [given[e] for e in names] if given is not None else load_series(cfg, names)

    report = PerEntityReport(out=Path(out))
    jobs = {None: report.out / DEFAULT_FILE}
    jobs.update({e: report.out / ENTITIES_DIR / entity_file_name(e) for e in entities})
    todo = [e for e, path in jobs.items()
            if not (path.is_file() and is_current(path, fingerprint(cfg, name, data_of(e))))]
    report.kept = [e or "(default)" for e in jobs if e not in todo]
    workers = workers or min(os.cpu_count() or 1, max(1, len(todo)))
    log.info("per-entity training into %s: %d bundles to train, %d up to date, %d workers", report.out, len(todo),
             len(report.kept), workers)
    bar = _progress(len(jobs), len(report.kept), progress)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # a forked torch with live threads can deadlock
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_train_one, cfg, name, entities if e is None else [e], str(jobs[e]),
                               None if given is None else data_of(e), source): e for e in todo}
        for future in as_completed(futures):
            entity = futures[future] or "(default)"
            try:
                future.result()
                report.trained.append(entity)
            except Exception as exc:  # one entity's bad data must not lose the others' bundles
                report.failed[entity] = f"{type(exc).__name__}: {exc}"
                log.error("training %s failed: %s", entity, report.failed[entity])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(trained=len(report.trained), failed=len(report.failed), refresh=False)
    if bar is not None:
        bar.close()
    return report


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("streamdet").setLevel(logging.WARNING)  # the parent's progress bar speaks for the workers


def _train_one(cfg, name: str, entities: list[str], out: str, series: Optional[list] = None,
               source: Optional[dict] = None) -> str:
    from . import train_bundle

    return str(train_bundle(cfg, model_name=name, entities=entities, out=out, progress=False, series=series,
                            source=source).path)


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="bundle", desc="per-entity", dynamic_ncols=True, mininterval=0.5)
