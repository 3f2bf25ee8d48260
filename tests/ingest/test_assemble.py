"""The assemble stage: per-sample messages of one entity -> one row per entity per interval on the channel list."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.pipeline.assemble import MAX_OPEN_ROWS, Assembler
from streamdet.pipeline.decode import REASONS
from streamdet.pipeline.formats import Sample
from streamdet.serve.state import decode_checkpoint, encode_checkpoint
from streamdet.types import Source

CHANNELS = ("cpu", "mem", "load")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(**kw) -> Assembler:
    kw.setdefault("interval_s", 1.0)
    return Assembler(CHANNELS, **kw)


def cycle(entity: str, t: float, values=(1.0, 2.0, 3.0), channels=CHANNELS, jitter=0.0, offset=0):
    """One agent read cycle: a sample per channel, `jitter` s apart, sources on partition 0 from `offset`."""
    return [(Sample(entity, c, t + k * jitter, v), ("metrics", 0, offset + k, 0))
            for k, (c, v) in enumerate(zip(channels, values))]


def test_a_complete_row_is_emitted_at_once_in_channel_order():
    asm = make()
    out = asm.add_many([(Sample("h", c, 100.0, v), ("m", 0, k, 0)) for k, (c, v) in
                        enumerate([("load", 3.0), ("cpu", 1.0), ("mem", 2.0)])])
    [row] = out.rows
    assert row.entity == "h" and row.ts == 100.0 and row.values.tolist() == [1.0, 2.0, 3.0]
    assert row.values.dtype == np.float32 and row.source == ("m", 0, 0, 0) and row.carried == ()
    assert not out.dropped and not out.rejected and len(asm) == 1


def test_a_read_cycle_straddling_a_second_lands_in_one_row():
    asm = make()
    rows = []
    for i in range(5):  # cycles at .990, each sample 8 ms apart: the last one crosses into the next second
        rows += asm.add_many(cycle("h", 1000.990 + i, jitter=0.008, offset=3 * i)).rows
    assert [r.ts for r in rows] == pytest.approx([1000.990 + i for i in range(5)])
    assert all(r.values.tolist() == [1.0, 2.0, 3.0] for r in rows)


def test_a_missing_channel_is_carried_forward_then_the_row_is_dropped_naming_it():
    asm = make(carry_forward=2)
    asm.add_many(cycle("h", 0.0))
    outs = [asm.add_many(cycle("h", float(t), values=(t, 20.0 + t), channels=("cpu", "mem"))) for t in range(1, 6)]
    outs.append(asm.drain())
    rows = [r for o in outs for r in o.rows]
    dropped = [(r, e) for o in outs for r, e in o.dropped]
    assert [(r.ts, r.values.tolist(), r.carried) for r in rows] == [
        (1.0, [1.0, 21.0, 3.0], ("load",)), (2.0, [2.0, 22.0, 3.0], ("load",))]
    assert [r.ts for r, _ in dropped] == [3.0, 4.0, 5.0]
    row, err = dropped[0]
    assert err.reason == "missing_channel" and err.reason in REASONS and "load" in err.detail
    assert "input.carry_forward=2" in err.detail and math.isnan(row.values[2]) and row.values[0] == 3.0
    assert asm.carried == 2


def test_a_channel_never_seen_drops_the_row_and_carry_forward_zero_never_invents():
    asm = make(carry_forward=0)
    asm.add_many(cycle("h", 0.0, channels=("cpu", "mem")))
    out = asm.add_many(cycle("h", 2.0))  # two intervals later: row 0 is due (event time)
    assert [r.ts for r in out.rows] == [2.0] and [r.ts for r, _ in out.dropped] == [0.0]
    assert "load" in out.dropped[0][1].detail


def test_an_incomplete_row_waits_for_its_deadline_on_the_clock():
    clock = Clock()
    asm = make(clock=clock)
    asm.add_many(cycle("h", 0.0))
    clock.now = 10.0
    assert not asm.add_many(cycle("h", 1.0, channels=("cpu", "mem"))).rows
    assert asm.seconds_until_due() == pytest.approx(1.0)
    clock.now = 10.5
    assert not asm.due().rows
    clock.now = 11.0
    [row] = asm.due().rows
    assert row.ts == 1.0 and row.carried == ("load",) and asm.seconds_until_due() is None


def test_duplicates_keep_the_first_value_and_late_samples_are_counted_or_rejected():
    asm = make(allowed_lateness_s=30.0)
    out = asm.add_many(cycle("h", 0.0, channels=("cpu", "mem")) + [(Sample("h", "cpu", 0.0, 99.0), "x")]
                       + [(Sample("h", "load", 0.0, 3.0), "y")])
    assert [r.values.tolist() for r in out.rows] == [[1.0, 2.0, 3.0]] and asm.duplicates == 1
    asm.add_many(cycle("h", 20.0))
    assert not asm.add_many([(Sample("h", "cpu", 0.2, 5.0), "z")]).rejected and asm.late_dropped == 1
    asm.add_many(cycle("h", 40.0))
    [(source, err)] = asm.add_many([(Sample("h", "cpu", 1.0, 5.0), "late-one")]).rejected
    assert source == "late-one" and err.reason == "late" and "allowed_lateness_s=30" in err.detail


def test_unknown_channels_are_counted_with_bounded_names():
    asm = make(max_channels=2)
    out = asm.add_many([(Sample("h", f"disk{i}", 0.0, 1.0), i) for i in range(5)] + cycle("h", 0.0))
    assert len(out.rows) == 1 and not out.rejected
    assert asm.unknown_total == 5 and asm.unknown == {"disk0": 1, "disk1": 1}


def test_an_entity_is_assembled_from_the_partition_of_its_open_rows():
    asm = make()
    asm.add_many([(Sample("h", "cpu", 0.0, 1.0), ("metrics", 2, 7, 0))])
    [(source, err)] = asm.add_many([(Sample("h", "mem", 0.0, 1.0), ("metrics", 3, 1, 0))]).rejected
    assert err.reason == "other_partition" and "metrics[3]" in err.detail and "metrics[2]" in err.detail
    asm.drain()  # no open row left: the next sample from partition 3 moves the entity there
    out = asm.add_many([(Sample("h", c, 1.0, 1.0), ("metrics", 3, 2 + k, 0)) for k, c in enumerate(CHANNELS)])
    assert not out.rejected and [r.source for r in out.rows] == [("metrics", 3, 2, 0)]
    asm.add_many([(Sample("h", "cpu", 2.0, 1.0), ("metrics", 3, 9, 0))])  # a row open on partition 3, which owns h now
    [(source, err)] = asm.add_many([(Sample("h", "mem", 2.0, 1.0), ("metrics", 2, 8, 0))]).rejected
    assert err.reason == "other_partition" and "assembled from metrics[3]" in err.detail


def test_entities_are_capped_and_an_idle_one_is_evicted_with_its_rows_emitted():
    clock = Clock()
    asm = make(max_entities=2, entity_idle_s=60.0, clock=clock)
    asm.add_many(cycle("a", 0.0, channels=("cpu", "mem", "load")) + cycle("b", 0.0, channels=("cpu",)))
    [(_, err)] = asm.add_many([(Sample("c", "cpu", 0.0, 1.0), "c0")]).rejected
    assert err.reason == "entity_cap" and len(asm) == 2
    clock.now = 61.0
    out = asm.add_many([(Sample("c", "cpu", 0.0, 1.0), "c0")])
    assert not out.rejected and sorted(asm.entities()) == ["b", "c"]


def test_open_rows_per_entity_are_bounded():
    asm = make(allowed_lateness_s=1e9)
    out = asm.add_many([(Sample("h", "cpu", float(-t), 1.0), t) for t in range(3 * MAX_OPEN_ROWS)])
    assert len(list(asm.pending_sources())) <= MAX_OPEN_ROWS + 1
    assert len(out.rows) + len(out.dropped) + len(out.rejected) + asm.late_dropped > 0


def test_pending_sources_are_the_first_source_of_each_open_row():
    asm = make()
    asm.add_many(cycle("h", 0.0, channels=("cpu",), offset=10) + cycle("h", 1.0, channels=("cpu", "mem"), offset=11))
    assert sorted(asm.pending_sources()) == [("metrics", 0, 10, 0), ("metrics", 0, 11, 0)]
    assert asm.last_source("h") == ("metrics", 0, 12, 0)


def stream(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        for k, c in enumerate(CHANNELS):
            if rng.random() < 0.85:
                out.append((Sample(f"e{t % 2}", c, 500.0 + t // 2 + 0.01 * k, float(rng.normal())),
                            Source("metrics", 0, len(out), 0)))
    return out


def test_state_round_trip_through_a_checkpoint_continues_as_if_never_stopped():
    samples = stream(60)
    whole = make(carry_forward=1)
    expected = whole.add_many(samples)
    expected.extend(whole.drain())
    first, second = make(carry_forward=1), make(carry_forward=1)
    got = first.add_many(samples[:70])
    for entity in first.entities():
        raw = encode_checkpoint(entity, first.state_dict(entity), Source("metrics", 0, 0, 0), "sha")
        second.load_state(entity, decode_checkpoint(raw)["state"])
    assert all(type(s) is Source for s in second.pending_sources())  # sources come back as they were
    assert all(type(second.last_source(e)) is Source for e in second.entities())
    got.extend(second.add_many(samples[70:]))
    got.extend(second.drain())
    assert [(r.entity, r.ts, r.values.tolist(), r.carried, r.source) for r in got.rows] == \
        [(r.entity, r.ts, r.values.tolist(), r.carried, r.source) for r in expected.rows]
    assert [(r.ts, e.detail) for r, e in got.dropped] == [(r.ts, e.detail) for r, e in expected.dropped]


entities = st.sampled_from(["a", "b", "c", "d", "e"])
samples_st = st.lists(st.tuples(entities, st.sampled_from(CHANNELS + ("x", "y")),
                                st.floats(0, 200, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False),
                                st.integers(0, 2)), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples_st, st.integers(0, 4))
def test_any_sample_stream_keeps_state_bounded_and_rows_ordered_and_finite(raw, carry):
    clock = Clock()
    asm = make(max_entities=3, entity_idle_s=5.0, allowed_lateness_s=20.0, carry_forward=carry, clock=clock)
    out = asm.add_many((Sample(e, c, ts, v), ("metrics", p, k, 0)) for k, (e, c, ts, v, p) in enumerate(raw))
    clock.now = 100.0
    out.extend(asm.due())
    out.extend(asm.drain())
    assert len(asm) <= 3 and len(asm.unknown) <= 4096
    assert all(e.reason in REASONS and e.detail for _, e in out.rejected + out.dropped)
    last: dict[str, float] = {}
    for row in out.rows:
        assert np.isfinite(row.values).all() and row.values.shape == (3,)
        assert row.ts > last.get(row.entity, -math.inf)
        last[row.entity] = row.ts
