"""Checkpoint encoding: exact round trip of pipeline state, no code execution, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.serve.ledger import Ledger
from streamdet.serve.state import StateError, decode_checkpoint, encode_checkpoint
from streamdet.types import Source
from tests.conftest import SMD_CONFIG
from tests.pipeline.helpers import DeviationDetector, FakeBundle, exponential_calibration, record


def test_round_trip_keeps_arrays_tuples_and_non_finite_floats():
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "src": [("t", 1, 5, 7)], "peak": float("-inf"),
             "n": np.int64(3), "nested": {"x": (1.5, "y")}}
    message = decode_checkpoint(encode_checkpoint("e", state, Source("t", 1, 5, 9), "sha"))
    back = message["state"]
    np.testing.assert_array_equal(back["a"], state["a"])
    assert back["a"].dtype == np.float32
    assert back["src"] == [("t", 1, 5, 7)] and back["peak"] == float("-inf") and back["n"] == 3
    assert back["nested"] == {"x": (1.5, "y")} and message["last_source"] == Source("t", 1, 5, 9)
    assert type(back["src"][0]) is Source  # a window's Kafka sources come back typed


def test_source_columns_round_trip_with_empty_slots_and_tricky_members():
    """Window sources take the one-step column form; columns holding numpy scalars or non-finite floats fall back
    to the element-wise form. Both come back as the same tuples."""
    plain = [None, ("t", 0, 5, 1700000000000), ("t", 0, 6, 1700000000001)]
    tricky = [("t", np.int64(1), 2), ("t", float("nan"), 3)]
    raw = encode_checkpoint("e", {"plain": plain, "tricky": tricky}, Source("t", 0, 6), "sha")
    back = decode_checkpoint(raw)["state"]
    assert back["plain"] == plain
    assert back["tricky"][0] == ("t", 1, 2) and back["tricky"][1][0] == "t" and np.isnan(back["tricky"][1][1])


@pytest.mark.parametrize("raw", [b"not json", b'{"version": 99}', b'{"version": 1}'])
def test_bad_checkpoints_raise_state_error(raw):
    with pytest.raises(StateError):
        decode_checkpoint(raw)


def test_pipeline_state_through_the_codec_continues_identically():
    cfg = load_config(SMD_CONFIG, ["scoring.stride=4", "scoring.max_batch=1", "alerting.min_consecutive=1"])

    def make():
        return Pipeline(PipelineSettings.of(cfg), FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), 8,
                                        exponential_calibration()))

    def items(lo, hi):
        return [(record("e", 1000.0 + i, np.full(3, 50.0 if i == 40 else np.sin(i))), Source("m", 0, i, 7))
                for i in range(lo, hi)]

    a, a_ledger = make(), Ledger()
    a_ledger.took(a.process(items(0, 23)).held)
    a.flush_batches()
    restored, ledger = make(), Ledger()
    message = decode_checkpoint(encode_checkpoint("e", a.state_dict("e"), a_ledger.held["e"], "sha"))
    assert message["last_source"] == Source("m", 0, 22, 7)
    restored.load_state("e", message["state"])
    ledger.restored("e", message["last_source"])
    redelivered = items(20, 60)  # Kafka redelivers from an older committed offset
    got = [(s.source, s.score, s.threshold) for s in [*restored.process(redelivered, ledger.skip_filter()).points(),
                                                      *restored.flush_batches().points()]]
    want = [(s.source, s.score, s.threshold) for s in [*a.process(items(23, 60)).points(), *a.flush_batches().points()]]
    assert got == want and ledger.skipped == 3 and ledger.skip_filter() is None  # past the checkpoint: no filter


def test_a_recreated_topic_s_records_are_scored_though_their_offsets_are_below_the_checkpoint():
    """The metrics topic deleted and created again: offsets restart at 0, timestamps go on. Records below the
    restored checkpoint's offset but newer than its record are new (scored); older ones are redeliveries (skipped)."""
    through = Source("m", 0, 5_000, 1_000_000)
    ledger = Ledger()
    ledger.restored("e", through)
    held = ledger.skip_filter()
    assert held("e", Source("m", 0, 4_990, 999_990)) and held("e", Source("m", 0, 5_000, 1_000_000))
    assert ledger.skipped == 2
    assert not held("e", Source("m", 0, 0, 1_000_500))  # the recreated topic's first record
    assert ledger.skip_filter() is None  # from here on every record of the entity is new
