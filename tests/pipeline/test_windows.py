import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.errors import ConfigError, DecodeError
from streamdet.pipeline.windows import WindowStore

L, C = 5, 2


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def row(i: int) -> np.ndarray:
    return np.array([i, 10 * i], dtype=np.float32)


def store(stride=2, max_entities=10, lateness=5.0, idle=100.0, clock=None, max_delay=0.0) -> WindowStore:
    return WindowStore(L, C, stride, max_entities, lateness, idle, clock or Clock(), max_delay)


def push_one(ws, entity, ts, values, source):
    """A single point is a batch of one: -> the requests it completed (an evicted entity's included); its
    DecodeError raised when it was rejected."""
    result = ws.push([entity], [ts], values[None, :], [source])
    if result.rejected:
        raise result.rejected[0][1]
    return [request for _, request in result.requests]


def push_range(ws, entity, start, stop):
    return [r for i in range(start, stop) for r in push_one(ws, entity, float(i), row(i), ("t", 0, i))]


def test_warm_up_windows_are_edge_padded_and_marked_cold():
    ws = store(stride=2)
    assert push_one(ws, "e", 0.0, row(0), ("t", 0, 0)) == []
    (req,) = push_one(ws, "e", 1.0, row(1), ("t", 0, 1))
    assert not req.warm and req.n_new == 2
    assert req.window[:, 0].tolist() == [0, 0, 0, 0, 1]  # first row repeated in front
    assert req.ts.tolist() == [0.0, 1.0] and req.sources == [("t", 0, 0), ("t", 0, 1)]


def test_full_windows_are_in_time_order_across_wraps():
    ws = store(stride=2)
    reqs = push_range(ws, "e", 0, 13)
    assert [r.warm for r in reqs] == [False, False, True, True, True, True]
    last = reqs[-1]
    assert last.window[:, 0].tolist() == [7, 8, 9, 10, 11]  # wrapped twice, still oldest first
    assert last.window[:, 1].tolist() == [70, 80, 90, 100, 110]
    assert last.ts.tolist() == [10.0, 11.0]


def test_each_point_is_new_in_exactly_one_request():
    ws = store(stride=3)
    reqs = push_range(ws, "e", 0, 20) + ws.drain()
    offsets = [s[2] for r in reqs for s in r.sources]
    assert offsets == list(range(20))
    assert [r.n_new for r in reqs] == [3] * 6 + [2]
    assert reqs[-1].window[-2:, 0].tolist() == [18, 19]
    assert ws.drain() == []


def test_request_window_is_a_copy():
    ws = store(stride=1)
    first = push_range(ws, "e", 0, 6)[-1]
    snapshot = first.window.copy()
    push_range(ws, "e", 6, 9)
    assert np.array_equal(first.window, snapshot)


def test_lateness_rejects_only_points_too_far_back():
    ws = store(stride=1, lateness=5.0)
    push_one(ws, "e", 100.0, row(0), None)
    push_one(ws, "e", 100.0, row(1), None)  # duplicate timestamp: fine
    push_one(ws, "e", 96.0, row(2), None)  # 4 s back: within lateness
    with pytest.raises(DecodeError) as info:
        push_one(ws, "e", 94.0, row(3), None)
    assert info.value.reason == "late" and "'e'" in info.value.detail
    push_one(ws, "other", 1.0, row(4), None)  # lateness is per entity


def test_entity_cap_rejects_when_all_active_and_evicts_idle_lru():
    clock = Clock()
    ws = store(stride=3, max_entities=2, idle=60.0, clock=clock)
    push_one(ws, "a", 0.0, row(0), ("t", 0, 0))
    clock.now = 10.0
    push_one(ws, "b", 0.0, row(1), ("t", 0, 1))
    with pytest.raises(DecodeError) as info:
        push_one(ws, "c", 0.0, row(2), ("t", 0, 2))
    assert info.value.reason == "entity_cap"
    clock.now = 65.0  # "a" idle 65 s, "b" only 55 s
    flushed = push_one(ws, "c", 0.0, row(3), ("t", 0, 3))  # the evicted entity's pending point comes along
    assert "a" not in ws and "b" in ws and "c" in ws
    assert [(r.entity, r.n_new, r.sources) for r in flushed] == [("a", 1, [("t", 0, 0)])]
    assert ws.take_flushed() == []


def test_recent_use_protects_from_eviction():
    clock = Clock()
    ws = store(stride=3, max_entities=2, idle=60.0, clock=clock)
    push_one(ws, "a", 0.0, row(0), None)
    push_one(ws, "b", 0.0, row(0), None)
    clock.now = 100.0
    push_one(ws, "a", 1.0, row(1), None)  # "a" becomes most recently used
    push_one(ws, "c", 0.0, row(2), None)
    assert "b" not in ws and "a" in ws


def test_pending_sources_are_points_not_yet_emitted():
    ws = store(stride=3)
    push_range(ws, "e", 0, 5)
    assert list(ws.pending_sources()) == [("t", 0, 3), ("t", 0, 4)]


def test_state_round_trip_gives_identical_requests():
    ws = store(stride=2)
    push_range(ws, "e", 0, 7)
    state = ws.state_dict("e")
    state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}  # e.g. via JSON
    restored = store(stride=2)
    restored.load_state("e", state)
    a, b = push_range(ws, "e", 7, 16), push_range(restored, "e", 7, 16)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert np.array_equal(x.window, y.window) and x.sources == y.sources and x.warm == y.warm
        assert np.array_equal(x.ts, y.ts)


def test_checkpoint_state_keeps_the_ring_layout_changelogs_were_written_in():
    """Changelogs hold point i of an entity in slot i mod L with `pos` the next slot (the layout deltas extend): the
    store keeps its points in another order, so its state converts, while warming up and after the points moved
    within its buffer, in blocks and one by one; and a state in that layout loads back to the same requests."""
    ws = store(stride=3)
    push_range(ws, "e", 0, 3)
    state = ws.state_dict("e")
    assert state["pos"] == 3 and state["values"][:3, 0].tolist() == [0, 1, 2] and not state["values"][3:].any()
    assert state["sources"] == [("t", 0, 0), ("t", 0, 1), ("t", 0, 2), None, None]
    block = range(3, 30)  # one block longer than the buffer's spare rows, then single points past several moves
    ws.push(["e"] * len(block), [float(i) for i in block], np.stack([row(i) for i in block]),
            [("t", 0, i) for i in block])
    push_range(ws, "e", 30, 47)
    state = ws.state_dict("e")
    assert state["seen"] == 47 and state["pos"] == 47 % L and state["pending"] == 47 % 3
    assert [state["values"][i % L, 1] for i in range(42, 47)] == [10 * i for i in range(42, 47)]
    assert [state["sources"][i % L] for i in range(42, 47)] == [("t", 0, i) for i in range(42, 47)]
    assert [state["ts"][i % L] for i in range(42, 47)] == [float(i) for i in range(42, 47)]
    restored = store(stride=3)
    restored.load_state("e", state)
    assert _requests_as_data(push_range(restored, "e", 47, 60)) == _requests_as_data(push_range(ws, "e", 47, 60))


def test_stride_larger_than_window_is_a_config_error():
    with pytest.raises(ConfigError, match="scoring.stride"):
        WindowStore(4, 1, 5, 10, 0.0, 0.0)


def _requests_as_data(requests):
    return [(r.entity, r.window.tolist(), r.n_new, r.ts.tolist(), list(r.sources), r.warm) for r in requests]


@settings(max_examples=25, deadline=None)
@given(stride=st.integers(1, L), max_entities=st.sampled_from([4, 10]), max_delay=st.sampled_from([0.0, 20.0]),
       tick=st.sampled_from([7, 40, 64]), cuts=st.lists(st.integers(1, 30), min_size=1, max_size=10),
       seed=st.integers(0, 2**16))
def test_how_a_stream_is_cut_into_batches_changes_nothing(stride, max_entities, max_delay, tick, cuts, seed):
    """One path for every batch size: blocks (entities with many points per batch), single points, late points,
    warm-up, evictions (cap 4 with six entities) and overdue points give the same requests in the same order, the
    same rejections and the same state whether the points between two clock ticks (`tick` records, one second
    each) arrive one at a time or cut anywhere."""
    rng = np.random.default_rng(seed)
    n = 400
    entities = [f"e{int(i)}" for i in rng.choice(6, n, p=[0.5, 0.3, 0.1, 0.05, 0.03, 0.02])]
    ts = (np.arange(n) + rng.normal(0, 1, n) * (rng.random(n) < 0.1) * 30).tolist()  # some points far back
    values = rng.random((n, C), dtype=np.float32)
    sources = [("t", 0, k) for k in range(n)]

    def run(pieces):
        clock = Clock()
        ws = WindowStore(L, C, stride, max_entities, allowed_lateness_s=5.0, entity_idle_s=0.0, clock=clock,
                         max_delay_s=max_delay)
        requests, rejected = [], []
        for lo in range(0, n, tick):
            clock.now = float(lo)
            hi = min(lo + tick, n)
            for a, b in pieces(lo, hi):
                result = ws.push(entities[a:b], ts[a:b], values[a:b], sources[a:b])
                requests += [r for _, r in result.requests]
                rejected += [(a + k, exc.reason, exc.detail) for k, exc in result.rejected]
            requests += ws.take_overdue()
        return ws, _requests_as_data(requests), rejected

    def cut(lo, hi):
        bounds = [lo]
        for size in cuts * (hi - lo):
            if bounds[-1] >= hi:
                break
            bounds.append(min(hi, bounds[-1] + size))
        return list(zip(bounds[:-1], bounds[1:]))

    one, want_requests, want_rejected = run(lambda lo, hi: [(k, k + 1) for k in range(lo, hi)])
    many, got_requests, got_rejected = run(cut)
    assert got_rejected == want_rejected and any(reason == "late" for _, reason, _ in want_rejected)
    assert got_requests == want_requests and len(want_requests) > 30
    assert list(many._rings) == list(one._rings)  # same LRU order
    for entity in one._rings:
        a, b = one.state_dict(entity), many.state_dict(entity)
        assert all(np.array_equal(a[key], b[key]) if isinstance(a[key], np.ndarray) else a[key] == b[key] for key in a)


def test_a_point_that_waited_max_delay_is_emitted_with_its_entitys_other_pending_points():
    clock = Clock()
    ws = store(stride=4, clock=clock, max_delay=10.0)
    push_range(ws, "e", 0, 5)  # warm-up request of 4, then one point pending since t=0
    clock.now = 6.0
    push_range(ws, "e", 5, 6)  # a second pending point: the entity still waits from t=0
    push_range(ws, "f", 0, 1)  # another entity, waiting from t=6
    assert ws.seconds_until_overdue() == 4.0
    clock.now = 9.9
    assert ws.take_overdue() == []
    clock.now = 10.0
    (request,) = ws.take_overdue()
    assert (request.entity, request.n_new, [s[2] for s in request.sources]) == ("e", 2, [4, 5])
    assert request.window[-2:, 0].tolist() == [4, 5] and ws.seconds_until_overdue() == 6.0
    clock.now = 16.0
    assert [(r.entity, r.n_new) for r in ws.take_overdue()] == [("f", 1)]
    assert ws.take_overdue() == [] and ws.seconds_until_overdue() is None
    assert list(ws.pending_sources()) == []


def test_points_left_after_a_full_stride_wait_from_their_own_arrival():
    clock = Clock()
    ws = store(stride=2, clock=clock, max_delay=10.0)
    push_range(ws, "e", 0, 5)  # a full window; point 4 pending since t=0
    clock.now = 8.0
    new = range(5, 15)  # one block: point 4 and nine new ones in five strides, point 14 left pending
    result = ws.push(["e"] * 10, [float(i) for i in new], np.stack([row(i) for i in new]),
                          [("t", 0, i) for i in new])
    assert [r.n_new for _, r in result.requests] == [2] * 5
    clock.now = 17.9
    assert ws.take_overdue() == []  # point 14 arrived at t=8, not t=0
    clock.now = 18.0
    assert [s[2] for r in ws.take_overdue() for s in r.sources] == [14]


def test_no_point_is_ever_overdue_without_max_delay_or_with_a_clock_that_stands_still():
    clock = Clock()
    unbounded, frozen = store(stride=3, clock=clock), store(stride=3, max_delay=5.0)
    for ws in (unbounded, frozen):
        push_range(ws, "e", 0, 2)
    clock.now = 1e9
    assert unbounded.take_overdue() == [] and unbounded.seconds_until_overdue() is None
    assert frozen.take_overdue() == [] and frozen.seconds_until_overdue() == 5.0


def test_restored_pending_points_wait_from_the_restore():
    clock = Clock()
    ws = store(stride=4, clock=clock, max_delay=10.0)
    push_range(ws, "e", 0, 6)  # two points pending since t=0
    state = ws.state_dict("e")
    clock.now = 50.0
    restored = store(stride=4, clock=clock, max_delay=10.0)
    restored.load_state("e", state)
    assert restored.take_overdue() == [] and restored.seconds_until_overdue() == 10.0
    clock.now = 60.0
    assert [s[2] for r in restored.take_overdue() for s in r.sources] == [4, 5]


def test_removed_and_drained_entities_no_longer_wait():
    clock = Clock()
    ws = store(stride=4, clock=clock, max_delay=10.0)
    push_range(ws, "e", 0, 1)
    push_range(ws, "f", 0, 1)
    assert ws.remove("e").n_new == 1
    assert [r.entity for r in ws.drain()] == ["f"]
    clock.now = 100.0
    assert ws.take_overdue() == [] and ws.seconds_until_overdue() is None


@pytest.mark.parametrize("max_delay", [0.0, 10.0])
def test_take_waiting_emits_every_pending_point_once_the_longest_waiting_first(max_delay):
    clock = Clock()
    ws = store(stride=4, clock=clock, max_delay=max_delay)
    push_range(ws, "e", 0, 6)  # a warm-up request of 4; points 4 and 5 wait since t=0
    clock.now = 1.0
    push_range(ws, "f", 0, 1)
    push_range(ws, "g", 0, 4)  # a full stride: nothing waits
    clock.now = 2.0
    push_range(ws, "e", 6, 7)  # e still waits from t=0
    requests = ws.take_waiting()
    assert [(r.entity, r.n_new, [s[2] for s in r.sources]) for r in requests] == [("e", 3, [4, 5, 6]),
                                                                                  ("f", 1, [0])]
    assert requests[0].window[-3:, 0].tolist() == [4, 5, 6]
    assert ws.take_waiting() == [] and list(ws.pending_sources()) == []
    assert ws.take_overdue(now=1e9) == [] and ws.seconds_until_overdue() is None
    push_range(ws, "e", 7, 8)  # waiting starts again with the next point
    assert [r.n_new for r in ws.take_waiting()] == [1]
