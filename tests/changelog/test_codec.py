"""The format-2 record codec gives back exactly what it was given, whatever the values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamdet.changelog.packing import Packer
from streamdet.changelog.codec import DELTA, Head, decode_record, encode_record
from streamdet.types import Source
from tests.changelog.helpers import assert_same_state

floats32 = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=12))
floats64 = hnp.arrays(np.float64, st.integers(0, 30))
decimals = st.builds(lambda ints, k, dtype: (np.asarray(ints, dtype=np.float64) / 10.0 ** k).astype(dtype),
                     st.lists(st.integers(-10 ** 7, 10 ** 7), min_size=4, max_size=40), st.integers(0, 6),
                     st.sampled_from([np.float32, np.float64]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=5))
sources = st.lists(st.one_of(st.none(), st.builds(Source, st.sampled_from(["m", "n"]), st.integers(0, 3),
                                                  st.integers(-2 ** 63, 2 ** 63 - 1), scalars)), max_size=20)
rows3 = st.lists(st.one_of(st.none(), st.tuples(st.text(max_size=3), scalars, scalars)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(values=floats32, more=floats64, decimal=decimals, rows=sources, other=rows3,
       extra=st.dictionaries(st.text(max_size=4), scalars, max_size=4))
def test_any_state_round_trips_bit_for_bit(values, more, decimal, rows, other, extra):
    """Columns of four-member tuples are record sources (types.Source), other tuples stay tuples."""
    message = {"values": values, "more": more, "decimal": decimal, "rows": rows, "other": other, "extra": extra,
               "source": ("m", 0, 5)}
    head, back = decode_record(encode_record(Head(DELTA, 3, 7, 2), message))
    assert head == Head(DELTA, 3, 7, 2)
    assert_same_state(back, message)


def test_short_decimals_take_less_than_their_float_bytes():
    rows = np.round(np.random.default_rng(0).random((13, 38)), 4).astype(np.float32)
    ts = 1.7e9 + np.arange(13) * 0.4
    packed = encode_record(Head(DELTA, 1, 1, 1), {"values": rows, "ts": ts})
    raw = encode_record(Head(DELTA, 1, 1, 1), {"values": rows + np.float32(1e-7), "ts": ts + 1e-7})  # not decimal
    assert len(packed) < 0.75 * len(raw)


def test_decimals_take_the_fewest_places_even_after_an_array_that_needed_more():
    packer = Packer()
    places = lambda values: packer.decimal(np.asarray(values, dtype=np.float64), "x")["__q__"][2]  # noqa: E731
    assert places([0.123456, 1.5, 2.25, 3.0]) == 6
    assert places([1.0, 2.0, 3.0, -40.0]) == 0  # tried at 6 places first, then down to none
    assert places([0.1, 1.0, 2.0, 3.0]) == 1
    assert places([0.25, 0.5, 1.5, 2.0]) == 2


@settings(max_examples=200, deadline=None)
@given(written=hnp.arrays(np.float32, st.tuples(st.integers(0, 12), st.integers(1, 5))), unwritten=st.integers(0, 12),
       negative_zero=st.booleans(), rows=sources, nones=st.integers(0, 12))
def test_unwritten_ring_slots_round_trip(written, unwritten, negative_zero, rows, nones):
    """A ring not yet filled keeps zeros (and None sources) in its unwritten slots; they are not stored but rebuilt,
    and a slot that only looks unwritten (-0.0) comes back with its sign."""
    values = np.concatenate([written, np.zeros((unwritten, written.shape[1]), np.float32)])
    if negative_zero and len(values):
        values[-1, 0] = -0.0
    message = {"values": values, "ts": values[:, 0].astype(np.float64), "sources": rows + [None] * nones}
    head, back = decode_record(encode_record(Head(DELTA, 1, 1, 1), message))
    assert_same_state(back, message)


def test_a_fresh_ring_costs_its_written_slots_only():
    rng = np.random.default_rng(0)
    full = np.round(rng.random((100, 38)), 4).astype(np.float32)
    fresh = np.zeros_like(full)
    fresh[0] = full[0]
    sources = [Source("m", 0, k, 0) for k in range(100)]

    def size(values, n):
        return len(encode_record(Head(DELTA, 1, 1, 1), {"values": values, "ts": np.where(np.arange(100) < n, 1.7e9, 0.0),
                                                         "sources": sources[:n] + [None] * (100 - n)}))
    assert size(fresh, 1) < 0.05 * size(full, 100)  # 263 B against 7,253 (582 B when the slots were stored)
