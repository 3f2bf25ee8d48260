"""Bad changelog input: a corrupt, truncated or out-of-order record is skipped with one log line and a counter, its
entity starts cold (never a crash, never a wrong state), and the entity's next snapshot repairs it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.changelog import ChangelogFold
from streamdet.changelog.delta import DeltaError, apply, diff, mark_of
from streamdet.config import load_config
from streamdet.io.metrics import Metrics
from streamdet.serve.ledger import Ledger
from tests.changelog.helpers import ListLog, assert_same_state, checkpoint, make_checkpointer, make_pipeline, push
from tests.conftest import SMD_CONFIG

ENTITIES = ("e0", "e1")


def build_log(commits: int = 6, max_deltas: int = 100, seed: int = 0):
    """Two entities, `commits` checkpoints each (a snapshot, then deltas; another snapshot after 3 or 4 deltas with
    max_deltas 4); every full state each one had."""
    rng = np.random.default_rng(seed)
    pipeline, ledger, log, history, oracle = make_pipeline(), Ledger(), ListLog(), {e: [] for e in ENTITIES}, {}
    checkpointer = make_checkpointer(pipeline, log, max_deltas=max_deltas, size_ratio=100.0)
    for c in range(commits):
        for k, entity in enumerate(ENTITIES):
            push(pipeline, ledger, entity, 5, 100 * c + 10 * k, rng)
        checkpoint(pipeline, ledger, checkpointer, oracle)
        for entity in ENTITIES:
            history[entity].append(oracle[entity])
    pipeline.close()
    return log, history


def fold_of(records) -> ChangelogFold:
    fold = ChangelogFold()
    for key, value in records:
        fold.add(key, value)
    return fold


def same(got, want) -> bool:
    try:
        assert_same_state(got, want)
        return True
    except AssertionError:
        return False


def index_of(log: ListLog, key: bytes, nth: int = -1) -> int:
    return [i for i, (k, _) in enumerate(log.records) if k == key][nth]


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty"])
def test_a_corrupt_delta_is_skipped_logged_once_and_its_entity_starts_cold(damage, caplog):
    log, history = build_log()
    i = index_of(log, b"e0\x002")  # the second delta after e0's latest snapshot
    key, value = log.records[i]
    bad = {"flip a byte": value[:40] + bytes([value[40] ^ 0x10]) + value[41:], "truncate": value[: len(value) // 2],
           "empty": b""}[damage]
    log.records[i] = (key, bad)
    with caplog.at_level(logging.WARNING, logger="streamdet.changelog"):
        fold = fold_of(log.records)
        assert fold.restore("e0") is None
        e1 = fold.restore("e1")
    assert fold.skipped == 1 and fold.cold == ["e0"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "'e0'" in lines[0] and "delta 2" in lines[0], lines
    assert same(e1.state, history["e1"][-1][0])


def test_a_corrupt_snapshot_makes_its_entity_cold_and_the_next_snapshot_repairs_it():
    log, history = build_log()
    i = index_of(log, b"e1")
    log.records[i] = (log.records[i][0], log.records[i][1][:-7])  # truncated
    pipeline, ledger = make_pipeline(), Ledger()
    checkpointer = make_checkpointer(pipeline, log, max_deltas=4, size_ratio=100.0)
    assert checkpointer.restore_from(pipeline, ledger, {("m", 0)}, list(log.records)) == 1  # e0 only
    assert checkpointer.skipped == 1 and not pipeline.holds("e1")
    oracle: dict = {}
    push(pipeline, ledger, "e1", 3, 10_000, np.random.default_rng(1))
    checkpoint(pipeline, ledger, checkpointer, oracle)
    assert log.records[-1][0] == b"e1"  # a snapshot, of a generation above the broken chain's
    fold = fold_of(log.records)
    assert same(fold.restore("e1").state, oracle["e1"][0]) and fold.skipped == 1  # the old truncated record
    log.compact(1.0, True)
    fold = fold_of(log.records)
    assert same(fold.restore("e1").state, oracle["e1"][0]) and fold.skipped == 0
    assert same(fold.restore("e0").state, history["e0"][-1][0])
    pipeline.close()


def test_a_dirty_delta_slot_that_could_continue_the_chain_is_overwritten_by_the_next_snapshot():
    log, history = build_log(commits=5)
    chain = sum(1 for key, _ in log.records[index_of(log, b"e0"):] if key.startswith(b"e0\x00"))
    dirty = b"e0\x00%d" % (chain + 1)
    log.records.append((dirty, b"\x00sd2 garbage"))  # unreadable: it may be the chain's next delta
    pipeline, ledger = make_pipeline(), Ledger()
    metrics = Metrics(load_config(SMD_CONFIG).metrics)
    checkpointer = make_checkpointer(pipeline, log, metrics, max_deltas=4, size_ratio=100.0)
    checkpointer.restore_from(pipeline, ledger, {("m", 0)}, list(log.records))
    assert not pipeline.holds("e0") and pipeline.holds("e1")
    assert metrics.registry.get_sample_value("streamdet_state_records_skipped_total") == 1
    oracle: dict = {}
    push(pipeline, ledger, "e0", 3, 10_000, np.random.default_rng(1))
    checkpoint(pipeline, ledger, checkpointer, oracle)
    assert log.records[-2:] == [(b"e0", log.records[-2][1]), (dirty, None)]  # snapshot, then a tombstone
    written = {kind: metrics.registry.get_sample_value("streamdet_state_records_total", {"kind": kind})
               for kind in ("snapshot", "delta", "tombstone")}
    assert written == {"snapshot": 1, "delta": None, "tombstone": 1}
    assert metrics.registry.get_sample_value("streamdet_state_bytes_total") == len(log.records[-2][1]) + 2 + len(dirty)
    fold = fold_of(log.records)
    assert same(fold.restore("e0").state, oracle["e0"][0]) and fold.skipped == 1  # read before its tombstone
    log.compact(1.0, False)
    fold = fold_of(log.records)
    assert same(fold.restore("e0").state, oracle["e0"][0]) and fold.skipped == 0
    pipeline.close()


def test_out_of_order_records_make_their_entity_cold(caplog):
    """The latest snapshot overtaken by the one before it (written again later), and a chain with a gap."""
    log, history = build_log(commits=7, max_deltas=4)  # each: snapshots, and deltas between them
    first = log.records[index_of(log, b"e0", 0)]
    long_chain = build_log(commits=6)[0]  # no delta limit: the latest chain of e1 has several deltas
    assert sum(1 for key, _ in long_chain.records[index_of(long_chain, b"e1"):] if key.startswith(b"e1\x00")) >= 2
    gap = [record for i, record in enumerate(long_chain.records) if i != index_of(long_chain, b"e1\x001")]
    with caplog.at_level(logging.WARNING, logger="streamdet.changelog"):
        fold = fold_of([*log.records, first])
        assert fold.restore("e0") is None and fold.skipped == 1
        assert "newer snapshot" in caplog.records[-1].getMessage()
        fold = fold_of(gap)
        assert fold.restore("e1") is None and fold.skipped == 1
        assert "gap" in caplog.records[-1].getMessage()


def test_a_delta_applied_to_another_state_raises_delta_error():
    log, history = build_log(commits=3)
    (s0, _), (s1, _), (s2, _) = history["e0"]
    change = diff(mark_of(s1), s2)
    assert same(apply(s1, change), s2)
    with pytest.raises(DeltaError):
        apply(s0, change)


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6), st.floats(0.0, 1.0)),
    st.tuples(st.just("drop"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("repeat"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("swap"), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6)),
    st.tuples(st.just("garbage"), st.binary(max_size=60), st.binary(max_size=200)),
)


def mutate(records: list, op: tuple) -> None:
    n = len(records)
    if op[0] == "flip":
        key, value = records[op[1] % n]
        if value:
            pos = op[2] % len(value)
            records[op[1] % n] = (key, value[:pos] + bytes([value[pos] ^ op[3]]) + value[pos + 1:])
    elif op[0] == "truncate":
        key, value = records[op[1] % n]
        records[op[1] % n] = (key, value[:int(len(value or b"") * op[2])] if value is not None else None)
    elif op[0] == "drop":
        del records[op[1] % n]
    elif op[0] == "repeat":
        records.append(records[op[1] % n])
    elif op[0] == "swap":
        i, j = op[1] % n, op[2] % n
        records[i], records[j] = records[j], records[i]
    else:
        records.insert(len(records) // 2, (op[1], op[2]))


_LOG, _HISTORY = build_log(commits=7, max_deltas=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATIONS, min_size=1, max_size=4))
def test_a_damaged_changelog_never_crashes_the_restore_nor_yields_a_state_the_entity_never_had(mutations):
    records = list(_LOG.records)
    for op in mutations:
        if records:
            mutate(records, op)
    fold = fold_of(records)
    for entity in ENTITIES:
        restored = fold.restore(entity)
        if restored is not None:
            assert any(same(restored.state, state) and restored.last_source == source
                       for state, source in _HISTORY[entity])
