"""Restores as ownership moves: a rejected checkpoint leaves nothing half-loaded, an entity that moved away and came
back never extends the chain it had here, and no record, however foreign, crashes the fold."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import orjson
import pytest

from streamdet.changelog import ChangelogFold
from streamdet.changelog.codec import DELTA, MAGIC, SNAPSHOT
from streamdet.serve.ledger import Ledger
from tests.changelog.helpers import ListLog, assert_same_state, checkpoint, make_checkpointer, make_pipeline, push

PARTITION = ("m", 0)


def test_a_checkpoint_rejected_half_way_starts_its_entity_cold_and_redelivered_records_are_taken_once():
    """threshold.method changed between two runs of the same model: the window loads, the threshold refuses. The
    entity must start cold, as logged; a window left loaded without the ledger's skip-through took the redelivered
    records a second time."""
    pot, ledger, log = make_pipeline("pot"), Ledger(), ListLog()
    push(pot, ledger, "e0", 10, 0, np.random.default_rng(0))
    checkpoint(pot, ledger, make_checkpointer(pot, log), {})
    pot.close()
    restarted, restarted_ledger = make_pipeline("percentile"), Ledger()
    restore = make_checkpointer(restarted, ListLog()).restore_from
    assert restore(restarted, restarted_ledger, {PARTITION}, list(log.records)) == 0
    assert not restarted.holds("e0")
    cold, cold_ledger = make_pipeline("percentile"), Ledger()
    for pipeline, pipeline_ledger in ((restarted, restarted_ledger), (cold, cold_ledger)):
        push(pipeline, pipeline_ledger, "e0", 10, 0, np.random.default_rng(0))  # the records again
    assert_same_state(restarted.state_dict("e0"), cold.state_dict("e0"))
    restarted.close()
    cold.close()


def revoke(pipeline, ledger) -> None:
    """What Rebalance.on_revoke does with a checkpointer: the moved entities leave the pipeline and the ledger."""
    entities = ledger.entities_of([PARTITION])
    pipeline.forget(entities)
    ledger.forget(entities, [PARTITION])


def test_an_entity_back_from_another_instance_whose_chain_is_broken_gets_a_snapshot_above_the_log():
    """e0 moves from A to B, B writes two generations and its last delta is damaged, e0 comes back to A cold. A's
    first checkpoint must supersede everything in the log (a generation above B's, tombstones over the damaged
    slot), not follow the chain A had before the move (a generation under B's: the next restore found B's newer
    deltas and started e0 cold again)."""
    rng, log, oracle = np.random.default_rng(0), ListLog(), {}
    a, a_ledger = make_pipeline(), Ledger()
    a_checkpointer = make_checkpointer(a, log, max_deltas=2, size_ratio=100.0)
    for first in (0, 5):  # a snapshot and a delta
        push(a, a_ledger, "e0", 5, first, rng)
        checkpoint(a, a_ledger, a_checkpointer, oracle)
    revoke(a, a_ledger)
    b, b_ledger = make_pipeline(), Ledger()
    b_checkpointer = make_checkpointer(b, log, max_deltas=2, size_ratio=100.0)
    assert b_checkpointer.restore_from(b, b_ledger, {PARTITION}, list(log.records)) == 1
    for first in range(10, 40, 5):  # snapshot, 2 deltas, snapshot, 2 deltas
        push(b, b_ledger, "e0", 5, first, rng)
        checkpoint(b, b_ledger, b_checkpointer, oracle)
    key, value = log.records[-1]
    assert key == b"e0\x002"
    log.records[-1] = (key, value[:-5])  # B's last delta, truncated; B is gone
    b.close()
    assert a_checkpointer.restore_from(a, a_ledger, {PARTITION}, list(log.records)) == 0  # cold: broken chain
    push(a, a_ledger, "e0", 5, 40, rng)
    checkpoint(a, a_ledger, a_checkpointer, oracle)
    fold = ChangelogFold()
    for record in log.records:
        fold.add(*record)
    restored = fold.restore("e0")
    assert restored is not None, "A's checkpoint of e0 does not restore"
    assert_same_state(restored.state, oracle["e0"][0])
    a.close()


def test_a_restore_keeps_no_writer_state_of_entities_neither_held_nor_left_in_the_log():
    """Each restore noted every entity of the log (the owners of other partitions' too) for the writer, and nothing
    dropped the note of one erased since: with hosts that come and go, that grew with every rebalance."""
    rng, log = np.random.default_rng(0), ListLog()
    owner, owner_ledger = make_pipeline(), Ledger()
    owner_checkpointer = make_checkpointer(owner, log)
    for entity in ("e0", "e1"):
        push(owner, owner_ledger, entity, 5, 0, rng)
    checkpoint(owner, owner_ledger, owner_checkpointer, {})
    other, other_ledger = make_pipeline(), Ledger()
    other_checkpointer = make_checkpointer(other, ListLog())
    other_checkpointer.restore_from(other, other_ledger, {("m", 1)}, list(log.records))  # e0, e1 are not its
    owner_checkpointer.erase(["e0"])  # the owner evicted e0: its keys are tombstones
    other_checkpointer.restore_from(other, other_ledger, {("m", 1)}, list(log.records))
    assert set(other_checkpointer.writer._history) == {"e1"}
    owner.close()
    other.close()


def format_2(document: dict, index: int = 0) -> bytes:
    """A record of generation 1, chain 7 (a snapshot, or delta `index`) with a valid header and CRC around
    `document` (a foreign writer's body)."""
    plain = orjson.dumps(document)
    kind = SNAPSHOT if index == 0 else DELTA
    rest = struct.pack("<BQII", kind, 1, 7, index) + zlib.compress(struct.pack("<I", len(plain)) + plain)
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


FOREIGN = {
    "format-1, a short zero-padded array": orjson.dumps(
        {"version": 1, "model_sha256": "x", "last_source": {"__z__": []}, "state": {}}),
    "format-1, a zero-padded tuple": orjson.dumps(
        {"version": 1, "model_sha256": "x", "last_source": [], "state": {"__z__": [4, {"__t__": []}]}}),
    "format-1, an impossible array": orjson.dumps(
        {"version": 1, "model_sha256": "x", "last_source": [],
         "state": {"__z__": [10 ** 15, {"__nd__": ["<f4", [1], "AAAAAA=="]}]}}),
    "format-2, a zero-padded tuple": format_2(
        {"entity": "e0", "model_sha256": "x", "last_source": [], "state": {"__z__": [4, {"__t__": []}]}}),
}


@pytest.mark.parametrize("raw", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_foreign_record_that_does_not_unpack_is_skipped_not_raised(raw):
    fold = ChangelogFold()
    fold.add(b"e0", raw)
    assert fold.restore("e0") is None and fold.skipped == 1 and fold.cold == ["e0"]


def test_a_foreign_chain_that_does_not_fold_is_skipped_not_raised():
    """Both records unpack; the snapshot's window is not what a delta applies to."""
    fold = ChangelogFold()
    fold.add(b"e0", format_2({"entity": "e0", "model_sha256": "x", "last_source": [],
                              "state": {"window": {"seen": 0, "ts": [0.0, 0.0], "values": 5}, "threshold": {}}}))
    fold.add(b"e0\x001", format_2({"last_source": [], "delta": {
        "window": {"from_seen": 0, "values": [], "ts": [], "sources": [], "pos": 0}, "threshold": {},
        "appended": {}}}, index=1))
    assert fold.restore("e0") is None and fold.skipped == 1 and fold.cold == ["e0"]
