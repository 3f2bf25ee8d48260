"""Property: whatever the sequence of pushes, checkpoints (deltas and snapshots), compactions, model reloads,
evictions (erased with tombstones) and restores, folding the changelog gives exactly the state a full checkpoint of
each entity would have held, and nothing for an entity evicted since its last one."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.changelog import ChangelogFold
from streamdet.serve.ledger import Ledger
from tests.changelog.helpers import (ListLog, assert_same_state, checkpoint, erase, make_checkpointer, make_pipeline,
                                     push, shrink_threshold_buffers)
from tests.pipeline.helpers import DeviationDetector, FakeBundle, exponential_calibration

ENTITIES = ("e0", "e1", "e2")  # one more than the pipeline holds: evictions happen
OPS = st.one_of(
    st.tuples(st.just("push"), st.sampled_from(ENTITIES), st.integers(1, 14)),
    st.just(("checkpoint",)),
    st.tuples(st.just("compact"), st.floats(0.0, 1.0), st.booleans()),
    st.just(("reload",)),
    st.just(("restore",)),
)


class Run:
    """One daemon's life and its restarts, with the changelog that outlives them."""

    def __init__(self, method: str, max_deltas: int, size_ratio: float, seed: int):
        self.method, self.max_deltas, self.size_ratio = method, max_deltas, size_ratio
        self.rng = np.random.default_rng(seed)
        self.log = ListLog()
        self.oracle: dict = {}  # entity -> (state, last source) of its latest full checkpoint
        self.offset = 0
        self.pipeline, self.ledger, self.checkpointer = self._start()

    def _start(self):
        pipeline = make_pipeline(self.method)
        checkpointer = make_checkpointer(pipeline, self.log, max_deltas=self.max_deltas, size_ratio=self.size_ratio)
        return pipeline, Ledger(), checkpointer

    def do(self, op: tuple) -> None:
        if op[0] == "push":
            evicted = push(self.pipeline, self.ledger, op[1], op[2], self.offset, self.rng)
            erase(self.ledger, self.checkpointer, self.oracle, evicted)
            self.offset += op[2]
        elif op[0] == "checkpoint":
            checkpoint(self.pipeline, self.ledger, self.checkpointer, self.oracle)
        elif op[0] == "compact":
            self.log.compact(op[1], op[2])
        elif op[0] == "reload":  # the same model again: thresholds and alert state restart from calibration
            self.pipeline.replace_model(FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), 8,
                                                   exponential_calibration()))
            shrink_threshold_buffers(self.pipeline)
        else:
            self.check_fold()
            self.pipeline.close()
            self.pipeline, self.ledger, self.checkpointer = self._start()
            self.checkpointer.restore_from(self.pipeline, self.ledger, {("m", 0)}, list(self.log.records))
            for entity in ENTITIES:
                if self.pipeline.holds(entity):
                    assert_same_state(self.pipeline.state_dict(entity), self.oracle[entity][0], entity)

    def check_fold(self) -> None:
        fold = ChangelogFold()
        for key, value in self.log.records:
            fold.add(key, value)
        assert fold.entities() == set(self.oracle) and fold.skipped == 0
        for entity, (state, last_source) in self.oracle.items():
            restored = fold.restore(entity)
            assert restored is not None, entity
            assert_same_state(restored.state, state, entity)
            assert restored.last_source == last_source


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=40), method=st.sampled_from(["pot", "percentile"]),
       max_deltas=st.integers(1, 8), size_ratio=st.sampled_from([0.5, 2.0, 100.0]), seed=st.integers(0, 2 ** 16))
def test_fold_equals_the_latest_full_checkpoint(ops, method, max_deltas, size_ratio, seed):
    run = Run(method, max_deltas, size_ratio, seed)
    for op in [*ops, ("checkpoint",), ("restore",), ("push", "e0", 9), ("checkpoint",), ("restore",)]:
        run.do(op)
    run.pipeline.close()


def test_a_long_run_writes_mostly_deltas_and_folds_exactly():
    """Many commits of one busy entity: deltas between snapshots (the threshold deque overflowing meanwhile), and
    the fold of an uncompacted and of a fully compacted log both equal the last full checkpoint."""
    run = Run("pot", max_deltas=16, size_ratio=100.0, seed=7)
    for _ in range(60):
        run.do(("push", "e1", 5))
        run.do(("checkpoint",))
    writer = run.checkpointer.writer
    assert writer.deltas > 3 * writer.snapshots and writer.snapshots >= 3
    run.check_fold()
    run.log.compact(1.0, True)
    assert len(run.log.records) <= 1 + 16
    run.check_fold()
    run.pipeline.close()


def test_an_entity_evicted_and_back_gets_a_snapshot_not_a_delta_on_its_old_ring():
    """e0's ring is evicted (the pipeline holds two entities) and a new one filled with fewer than a window of points
    more than the old held: counters alone would take it for the old ring plus appends."""
    run = Run("pot", max_deltas=8, size_ratio=100.0, seed=3)
    for op in [("push", "e0", 5), ("checkpoint",), ("push", "e1", 4), ("push", "e2", 4), ("push", "e0", 7),
               ("checkpoint",)]:
        run.do(op)
    run.check_fold()
    assert run.checkpointer.writer.snapshots == 3  # e0 twice, e2 (e1 was evicted again before the commit)
    run.pipeline.close()


def test_an_evicted_entity_is_erased_snapshot_and_deltas_and_starts_a_fresh_chain_when_back():
    """e0 holds a snapshot and deltas when e1 and e2 take the pipeline's two places: every key of e0 gets a
    tombstone, so neither the log nor its compaction keeps anything of it; back later, it is checkpointed anew."""
    run = Run("pot", max_deltas=8, size_ratio=100.0, seed=5)
    for op in [("push", "e0", 9), ("checkpoint",), ("push", "e0", 4), ("checkpoint",), ("push", "e0", 4),
               ("checkpoint",)]:
        run.do(op)
    assert run.checkpointer.writer.deltas >= 2
    for op in [("push", "e1", 4), ("push", "e2", 4), ("checkpoint",)]:
        run.do(op)
    assert "e0" not in run.oracle
    run.check_fold()  # nothing of e0 left, in the log as written
    run.log.compact(1.0, True)
    assert not any(key.startswith(b"e0") for key, _ in run.log.records)
    for op in [("push", "e0", 9), ("checkpoint",), ("restore",)]:
        run.do(op)
    assert "e0" in run.oracle
    run.pipeline.close()
