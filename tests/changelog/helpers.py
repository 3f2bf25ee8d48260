"""A real pipeline and checkpointer whose changelog is a plain list (what the broker's topic would hold)."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from streamdet.changelog import ChangelogWriter
from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.pipeline.percentile import RollingPercentile
from streamdet.serve.ledger import Ledger
from streamdet.serve.state import Checkpointer
from streamdet.types import Source
from tests.conftest import SMD_CONFIG
from tests.pipeline.helpers import DeviationDetector, FakeBundle, exponential_calibration, record

SMALL_BUFFER = 6  # threshold deques this short fill up within a test, so their oldest values fall out


class ListLog:
    """The producer interface Checkpointer writes through, appending to a list; `compact` does what Kafka's log
    cleaner may do to a prefix of the log."""

    def __init__(self):
        self.records: list[tuple[bytes, bytes | None]] = []

    def produce(self, topic, key, value) -> None:
        self.records.append((key, value))

    def compact(self, share: float, drop_tombstones: bool) -> None:
        """Clean the first `share` of the log: keep only records that are the latest of their key (and, once the
        tombstone retention has passed, drop tombstones there too)."""
        cut = int(len(self.records) * share)
        latest = {key: i for i, (key, _) in enumerate(self.records)}
        self.records = [(key, value) for i, (key, value) in enumerate(self.records)
                        if i >= cut or (latest[key] == i and not (value is None and drop_tombstones))]


def make_pipeline(method: str = "pot", max_entities: int = 2) -> Pipeline:
    cfg = load_config(SMD_CONFIG, ["scoring.stride=4", "scoring.max_batch=1", "alerting.min_consecutive=1",
                                   "scoring.max_delay_s=0", f"threshold.method={method}",
                                   f"input.max_entities={max_entities}", "input.entity_idle_s=0"])
    bundle = FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), 8, exponential_calibration())
    pipeline = Pipeline(PipelineSettings.of(cfg), bundle, overlap=False)
    shrink_threshold_buffers(pipeline)
    return pipeline


def shrink_threshold_buffers(pipeline: Pipeline) -> None:
    """Make the prototype's peak deque (or percentile window) SMALL_BUFFER long, so that tests see it overflow."""
    bank = pipeline.thresholds
    proto = bank._prototype
    if isinstance(proto, RollingPercentile):
        bank._prototype = RollingPercentile(list(proto.values)[-3:], bank.cfg.percentile, window=SMALL_BUFFER)
    else:
        proto.peaks = deque(list(proto.peaks)[-3:], maxlen=SMALL_BUFFER)


def push(pipeline: Pipeline, ledger: Ledger, entity: str, n: int, first_offset: int,
         rng: np.random.Generator) -> list[str]:
    """n records of `entity`, offsets from first_offset; now and then a spike (alerts, threshold peaks). -> the
    entities the pipeline dropped at its cap meanwhile."""
    items = []
    for i in range(first_offset, first_offset + n):
        values = rng.normal(size=3) * (25.0 if rng.random() < 0.1 else 1.0)
        items.append((record(entity, 1000.0 + i, np.round(values, 3)), Source("m", 0, i, 1_700_000_000_000 + i)))
    result = pipeline.process(items, ledger.skip_filter())
    ledger.took(result.held)
    return result.evicted


def erase(ledger: Ledger, checkpointer: Checkpointer, oracle: dict, evicted: list[str]) -> None:
    """What the delivery does with entities the pipeline dropped: their checkpoints erased (tombstones)."""
    if evicted:
        checkpointer.erase(evicted)
        ledger.forget(evicted, ())
        for entity in evicted:
            oracle.pop(entity, None)


def checkpoint(pipeline: Pipeline, ledger: Ledger, checkpointer: Checkpointer, oracle: dict) -> None:
    """What the delivery's commit does, and the full checkpoint each written entity would have had (the oracle)."""
    result = pipeline.flush_batches()
    ledger.took(result.held)
    erase(ledger, checkpointer, oracle, result.evicted)
    touched = sorted(ledger.touched)
    checkpointer.write(pipeline, ledger, touched)
    for entity in touched:
        if pipeline.holds(entity):
            oracle[entity] = (pipeline.state_dict(entity), ledger.held[entity])
    ledger.touched.clear()


def make_checkpointer(pipeline: Pipeline, log, metrics=None, **writer) -> Checkpointer:
    return Checkpointer(load_config(SMD_CONFIG).kafka, log, ChangelogWriter(**writer), metrics)


def assert_same_state(got, want, path: str = "state") -> None:
    """Equal bit for bit: arrays by dtype, shape and bytes; floats by value (NaN equal to NaN)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same_state(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, np.ndarray):
        got = np.asarray(got)
        assert got.dtype == want.dtype and got.shape == want.shape, f"{path}: {got.dtype}{got.shape}"
        assert got.tobytes() == want.tobytes(), f"{path}: values differ"
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_state(a, b, f"{path}[{i}]")
    elif isinstance(want, float) and want != want:
        assert got != got, f"{path}: {got!r} is not NaN"
    else:
        assert got == want and isinstance(got, bool) == isinstance(want, bool), f"{path}: {got!r} != {want!r}"
