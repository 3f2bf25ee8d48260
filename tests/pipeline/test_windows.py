import numpy as np
import pytest

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


def store(stride=2, max_entities=10, lateness=5.0, idle=100.0, clock=None) -> WindowStore:
    return WindowStore(L, C, stride, max_entities, lateness, idle, clock or Clock())


def push_range(ws, entity, start, stop):
    return [r for i in range(start, stop) if (r := ws.push(entity, float(i), row(i), ("t", 0, i))) is not None]


def test_warm_up_windows_are_edge_padded_and_marked_cold():
    ws = store(stride=2)
    assert ws.push("e", 0.0, row(0), ("t", 0, 0)) is None
    req = ws.push("e", 1.0, row(1), ("t", 0, 1))
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
    ws.push("e", 100.0, row(0), None)
    ws.push("e", 100.0, row(1), None)  # duplicate timestamp: fine
    ws.push("e", 96.0, row(2), None)  # 4 s back: within lateness
    with pytest.raises(DecodeError) as info:
        ws.push("e", 94.0, row(3), None)
    assert info.value.reason == "late" and "'e'" in info.value.detail
    ws.push("other", 1.0, row(4), None)  # lateness is per entity


def test_entity_cap_rejects_when_all_active_and_evicts_idle_lru():
    clock = Clock()
    ws = store(stride=3, max_entities=2, idle=60.0, clock=clock)
    ws.push("a", 0.0, row(0), ("t", 0, 0))
    clock.now = 10.0
    ws.push("b", 0.0, row(1), ("t", 0, 1))
    with pytest.raises(DecodeError) as info:
        ws.push("c", 0.0, row(2), ("t", 0, 2))
    assert info.value.reason == "entity_cap"
    clock.now = 65.0  # "a" idle 65 s, "b" only 55 s
    ws.push("c", 0.0, row(3), ("t", 0, 3))
    assert "a" not in ws and "b" in ws and "c" in ws
    flushed = ws.take_flushed()
    assert [(r.entity, r.n_new, r.sources) for r in flushed] == [("a", 1, [("t", 0, 0)])]
    assert ws.take_flushed() == []


def test_recent_use_protects_from_eviction():
    clock = Clock()
    ws = store(stride=3, max_entities=2, idle=60.0, clock=clock)
    ws.push("a", 0.0, row(0), None)
    ws.push("b", 0.0, row(0), None)
    clock.now = 100.0
    ws.push("a", 1.0, row(1), None)  # "a" becomes most recently used
    ws.push("c", 0.0, row(2), None)
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


def test_stride_larger_than_window_is_a_config_error():
    with pytest.raises(ConfigError, match="scoring.stride"):
        WindowStore(4, 1, 5, 10, 0.0, 0.0)
