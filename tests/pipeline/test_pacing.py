"""The adaptive stride: 1 at light load, grows at once under a backlog, relaxes slowly."""

from __future__ import annotations

from streamdet.pipeline.pacing import CALM_POLLS, RELAX_S, AdaptiveStride


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_light_load_keeps_stride_one_and_a_backlog_doubles_it_up_to_the_ceiling():
    pace = AdaptiveStride(ceiling=20, max_poll=5000, max_batch=256, clock=Clock())
    assert [pace.observe(40, 3) for _ in range(5)] == [1] * 5
    assert [pace.observe(3000, 0) for _ in range(6)] == [2, 4, 8, 16, 20, 20]


def test_a_full_poll_a_poll_worth_of_backlog_or_a_full_batch_waiting_go_to_the_ceiling_at_once():
    """A daemon that starts behind (restart, catching up) scores its first polls at the ceiling, not at 2, 4, 8."""
    for polled, queued, backlog in ((5000, 0, 0), (0, 0, 5000), (10, 256, 0)):
        pace = AdaptiveStride(ceiling=20, max_poll=5000, max_batch=256, clock=Clock())
        assert pace.observe(polled, queued, backlog) == 20


def test_a_queue_of_windows_alone_is_pressure():
    pace = AdaptiveStride(ceiling=8, max_poll=5000, max_batch=256, clock=Clock())
    assert pace.observe(10, 200) == 2


def test_stride_relaxes_one_halving_per_calm_period_and_not_on_a_short_lull():
    clock = Clock()
    pace = AdaptiveStride(ceiling=16, max_poll=1000, max_batch=64, clock=clock)
    for _ in range(4):
        pace.observe(1000, 0)
    assert pace.stride == 16
    pace.observe(0, 0)
    clock.now += RELAX_S / 2
    pace.observe(900, 0)  # busy again before the calm period ended: no change, calm restarts
    clock.now += RELAX_S
    assert pace.observe(0, 0) == 16
    clock.now += RELAX_S / 2
    pace.observe(300, 0)  # a moderate load neither grows the stride nor restarts the calm period
    clock.now += RELAX_S
    assert pace.observe(0, 0) == 8
    clock.now += RELAX_S
    assert pace.observe(0, 0) == 4


def test_fixed_mode_stays_at_the_ceiling():
    pace = AdaptiveStride(ceiling=20, max_poll=5000, max_batch=256, adaptive=False, clock=Clock())
    assert pace.stride == 20 and pace.observe(0, 0) == 20 and pace.observe(5000, 999) == 20


def test_calm_after_consecutive_calm_polls_only():
    """`calm` (score the points waiting for the stride now) needs CALM_POLLS calm polls in a row; one busy or
    moderate poll restarts the count, and the clock plays no part (the stride itself is not relaxed by it)."""
    pace = AdaptiveStride(ceiling=16, max_poll=1000, max_batch=64, clock=Clock())
    for _ in range(3):
        pace.observe(600, 0)
    for _ in range(CALM_POLLS - 1):
        pace.observe(10, 0)
        assert not pace.calm
    pace.observe(300, 0)  # moderate: not calm
    for _ in range(CALM_POLLS - 1):
        pace.observe(0, 0)
    assert not pace.calm
    pace.observe(0, 3)
    assert pace.calm and pace.stride == 8  # calm, yet the stride waits for its calm second to halve
    pace.observe(1000, 0)
    assert not pace.calm


def test_fixed_mode_is_never_calm():
    pace = AdaptiveStride(ceiling=20, max_poll=5000, max_batch=256, adaptive=False, clock=Clock())
    for _ in range(5):
        pace.observe(0, 0)
    assert not pace.calm


def test_empty_polls_with_records_still_behind_the_consumer_are_not_calm():
    """Catching up on a topic, the client's fetch queue runs dry between fetches: those empty polls, with the
    backlog still in Kafka, must neither count as calm (which would split every entity's stride into partial
    windows) nor relax the stride; once the backlog is gone they do both."""
    clock = Clock()
    pace = AdaptiveStride(ceiling=16, max_poll=1000, max_batch=64, clock=clock)
    pace.observe(1000, 0)
    for _ in range(2 * CALM_POLLS):
        clock.now += RELAX_S
        assert pace.observe(0, 0, backlog=50_000) == 16
        assert not pace.calm
    pace.observe(0, 0, backlog=300)  # a moderate backlog: not calm either
    assert not pace.calm
    for _ in range(CALM_POLLS):
        clock.now += RELAX_S
        pace.observe(0, 0, backlog=10)
    assert pace.calm and pace.stride < 16
