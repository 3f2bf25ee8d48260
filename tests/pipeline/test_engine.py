"""engine.Pipeline with a real scripted torch module: every record scored once, offsets safe to commit."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.pipeline.departures import CHECK_EVERY_S
from streamdet.serve.ledger import Ledger
from streamdet.types import Source

from ..conftest import SMD_CONFIG
from .helpers import DeviationDetector, FakeBundle, exponential_calibration, record

L, C, STRIDE = 8, 3, 4


class FrozenClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_pipeline(max_batch=4, max_wait_ms=50.0, stride=STRIDE, overlap=False, module=None, max_delay_s=30.0,
                  adaptive=False):
    """A pipeline on a fixed stride unless `adaptive` (these tests pin down the mechanics of one stride)."""
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={stride}", f"scoring.max_batch={max_batch}",
                                   f"scoring.max_wait_ms={max_wait_ms}", "alerting.min_consecutive=1",
                                   f"scoring.max_delay_s={max_delay_s}", f"scoring.adaptive={adaptive}"])
    bundle = FakeBundle(module or torch.jit.script(DeviationDetector()), tuple("abc"), L, exponential_calibration())
    clock = FrozenClock()
    return Pipeline(PipelineSettings.of(cfg), bundle, clock, overlap=overlap), clock


def items(entity, start, n, partition=0, spike_at=None):
    out = []
    for i in range(start, start + n):
        values = np.full(C, 100.0 if i == spike_at else np.sin(i / 3.0))
        out.append((record(entity, 1000.0 + i, values), Source("m", partition, i)))
    return out


def pending_floor(p: Pipeline) -> dict:
    """Per partition, the lowest offset the pipeline holds unscored, as the daemon's ledger computes it."""
    consumed = {("m", 0): 10**9, ("m", 1): 10**9}
    return {tp: o for tp, o in Ledger().offsets_to_commit(p.pending_sources(), consumed).items() if o < 10**9}


@pytest.mark.parametrize("overlap", [False, True])
def test_every_record_scored_exactly_once_including_warm_up_and_drain(overlap):
    p, _ = make_pipeline(overlap=overlap)
    scored = []
    for chunk in range(0, 37, 5):  # 37 records: warm-up, full strides, and a partial stride at the end
        scored += p.process(items("e", chunk, min(5, 37 - chunk))).points()
    scored += p.drain().points()
    assert sorted(s.source[2] for s in scored) == list(range(37))
    warm = [s.warm for s in sorted(scored, key=lambda s: s.source[2])]
    assert warm[:STRIDE] == [False] * STRIDE and all(warm[STRIDE:]), "only points scored before the window filled"


def test_pending_floor_tracks_the_lowest_unscored_offset():
    p, clock = make_pipeline(max_batch=100, max_wait_ms=1000)
    p.process(items("e", 0, 6, partition=0) + items("f", 0, 3, partition=1))
    assert pending_floor(p) == {("m", 0): 0, ("m", 1): 0}  # nothing scored yet (batch not due)
    clock.now = 2.0
    result = p.poll()
    assert {s.source[2] for s in result.points() if s.source[1] == 0} == {0, 1, 2, 3}
    assert pending_floor(p) == {("m", 0): 4, ("m", 1): 0}
    p.drain()
    assert pending_floor(p) == {}


@pytest.mark.parametrize("overlap", [False, True])
def test_points_of_a_slow_entity_are_scored_once_they_waited_max_delay(overlap):
    p, clock = make_pipeline(max_batch=100, max_wait_ms=0, overlap=overlap, max_delay_s=5.0)
    first = list(p.process(items("e", 0, STRIDE + 2)).points())  # the warm-up stride; two points wait for theirs
    first += p.flush_batches().points()
    assert sorted(s.source[2] for s in first) == list(range(STRIDE))
    assert pending_floor(p) == {("m", 0): STRIDE} and p.seconds_until_due() == 5.0
    clock.now = 4.9
    assert list(p.poll().points()) + list(p.flush_batches().points()) == []
    clock.now = 5.0
    late = list(p.poll().points()) + list(p.flush_batches().points())
    assert [s.source[2] for s in late] == [STRIDE, STRIDE + 1]
    assert pending_floor(p) == {} and p.seconds_until_due() is None
    later = list(p.process(items("e", STRIDE + 2, STRIDE)).points()) + list(p.flush_batches().points())
    assert [s.source[2] for s in later] == list(range(STRIDE + 2, 2 * STRIDE + 2))  # strides count afresh


@pytest.mark.parametrize("overlap", [False, True])
def test_bad_records_are_reported_and_the_rest_scored(overlap):
    p, _ = make_pipeline(max_batch=1, overlap=overlap)
    batch = items("e", 0, 4) + [(b"not json", Source("m", 0, 4)), (record("e", 1.0, [1, 2]), Source("m", 0, 5))] + \
        [(record("e", 1000.0 + i, np.zeros(C)), Source("m", 0, i + 2)) for i in range(4, 8)]
    result = p.process(batch)
    assert [(r[2], r[1][2]) for r in result.rejected] == [("not_json", 4), ("wrong_width", 5)]
    assert sorted(s.source[2] for s in [*result.points(), *p.drain().points()]) == [0, 1, 2, 3, 6, 7, 8, 9]


@pytest.mark.parametrize("overlap", [False, True])
def test_interleaved_entities_get_their_own_windows_and_alerts(overlap):
    p, _ = make_pipeline(max_batch=1, overlap=overlap)
    stream = [x for pair in zip(items("e", 0, 40, spike_at=30), items("f", 0, 40)) for x in pair]
    result = p.process(stream)
    alerts = [a for a in result.alerts + p.drain().alerts if a.status == "firing"]
    assert {a.entity for a in alerts} == {"e"}
    assert any(1030.0 - STRIDE <= a.start_ts <= 1030.0 for a in alerts)  # the spike lifts its window's mean too


@pytest.mark.parametrize("overlap", [False, True])
def test_state_round_trip_mid_stream_gives_identical_scores(overlap):
    a, _ = make_pipeline(max_batch=1, overlap=overlap)
    a.process(items("e", 0, 21))
    b, _ = make_pipeline(max_batch=1, overlap=overlap)
    b.load_state("e", a.state_dict("e"))
    rest = items("e", 21, 30, spike_at=35)
    a.flush_batches()  # results a handled before the state was taken (in-flight batches with overlap)
    sa = [(s.source, s.score, s.threshold, s.over) for s in [*a.process(rest).points(), *a.drain().points()]]
    sb = [(s.source, s.score, s.threshold, s.over) for s in [*b.process(rest).points(), *b.drain().points()]]
    assert len(sa) == 31 and sa == sb  # record 20 waited in a partial stride when the state was taken


def test_overlap_changes_nothing_but_where_the_model_runs():
    stream = [x for pair in zip(items("e", 0, 60, spike_at=30), items("f", 0, 60, spike_at=45)) for x in pair]

    def run(overlap):
        p, _ = make_pipeline(max_batch=3, overlap=overlap)
        results = [p.process(stream[i:i + 7]) for i in range(0, len(stream), 7)] + [p.drain()]
        p.close()
        points = [(s.entity, s.source, s.score, s.threshold, s.over, s.warm) for r in results for s in r.points()]
        alerts = [a.to_message() for r in results for a in r.alerts]
        return points, alerts

    assert run(True) == run(False)
    assert len(run(True)[0]) == 120 and run(True)[1]


class GatedModule:
    """A model that waits for a gate: holds a batch 'in flight' on the inference thread for as long as a test
    needs."""

    def __init__(self):
        self.gate = threading.Event()
        self.model = torch.jit.script(DeviationDetector())

    def __call__(self, x):
        if threading.current_thread() is not threading.main_thread():  # the warm-up at construction runs unheld
            assert self.gate.wait(30), "test never opened the gate"
        return self.model(x)


def test_a_batch_in_flight_is_pending_until_handled():
    module = GatedModule()
    p, _ = make_pipeline(max_batch=1, overlap=True, module=module)
    first = p.process(items("e", 0, STRIDE))  # one full stride: one window, submitted to the inference thread
    assert first.n_scored == 0 and pending_floor(p) == {("m", 0): 0}  # offsets 0..3 not committable yet
    module.gate.set()
    done = p.flush_batches()
    assert sorted(s.source[2] for s in done.points()) == [0, 1, 2, 3] and pending_floor(p) == {}
    p.close()


def test_a_stride_larger_than_the_window_scores_every_window_records(caplog):
    """The default stride (20) with a short model window (8 here): a warning, and every record still scored once."""
    p, _ = make_pipeline(stride=3 * L, max_batch=1)
    assert "larger than the model window" in caplog.text and p.windows.stride == L
    scored = list(p.process(items("e", 0, 3 * L + 2)).points()) + list(p.drain().points())
    assert sorted(s.source[2] for s in scored) == list(range(3 * L + 2))


@pytest.mark.parametrize("calibrated, level", [(STRIDE, None), (2, logging.WARNING), (None, logging.INFO)])
def test_serving_a_bundle_at_another_stride_than_its_calibration_warns(caplog, calibrated, level):
    """The rule (pipeline/stride.check_calibrated_stride): a stride other than the bundle's calibration stride is
    served with a warning naming both, a bundle that does not record it with an INFO line, a matching one silently."""
    caplog.set_level(logging.INFO, logger="streamdet.pipeline.stride")
    calibration = exponential_calibration() | ({} if calibrated is None else {"stride": calibrated, "window": L})
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={STRIDE}"])
    Pipeline(PipelineSettings.of(cfg), FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), L, calibration), overlap=False)
    records = [r for r in caplog.records if "calibrated" in r.getMessage()]
    assert [r.levelno for r in records] == ([] if level is None else [level])
    if calibrated == 2:
        assert "calibrated at stride 2, the pipeline scores at stride 4" in records[0].getMessage()


@pytest.mark.parametrize("overlap", [False, True])
def test_an_entity_evicted_at_the_cap_leaves_every_stage_after_its_last_points_are_scored(overlap):
    """input.max_entities bounds all per-entity state: the window store evicts an idle entity, its pending points
    are still scored, then its threshold, alert and standardiser state go and the result names it; back later,
    it starts over."""
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={STRIDE}", "scoring.max_batch=4", "alerting.min_consecutive=1",
                                   "scoring.adaptive=false", "input.max_entities=2", "input.entity_idle_s=0"])
    bundle = FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), L, exponential_calibration())
    p = Pipeline(PipelineSettings.of(cfg), bundle, FrozenClock(), overlap=overlap)
    results = [p.process(items("a", 0, 14) + items("b", 0, 14))]
    learned_before = p.state_dict("a")["threshold"]["learned"]  # (its batches in flight handled first)
    results.append(p.process(items("c", 0, 3)))  # "a" is the least recently used: evicted for "c"
    results.append(p.flush_batches())
    scored = {e: sum(len(v.scores) for r in results for v in r.scored if v.entity == e) for e in "abc"}
    assert scored["a"] == 14  # the two points "a" still had pending were scored before it left
    assert [e for r in results for e in r.evicted] == ["a"]
    assert learned_before > 0 and p.thresholds.state_dict("a")["learned"] == 0
    assert not p.holds("a") and p.holds("b") and p.holds("c")
    back = p.process(items("a", 20, 4)).scored + p.flush_batches().scored  # "a" returns ("b" goes)
    assert [v.warm for v in back if v.entity == "a"] == [False]  # a new window, warming up again
    p.close()


def _silent_after_an_alert(resolve_idle_s: float, **settings):
    """A pipeline whose entity "a" fires on a spike at its last point, then sends nothing."""
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={STRIDE}", "scoring.max_batch=1", "alerting.min_consecutive=1",
                                   "scoring.adaptive=false", f"alerting.resolve_idle_s={resolve_idle_s}",
                                   *[f"{k}={v}" for k, v in settings.items()]])
    bundle = FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), L, exponential_calibration())
    clock = FrozenClock()
    p = Pipeline(PipelineSettings.of(cfg), bundle, clock, overlap=False)
    fired = p.process(items("a", 0, 12, spike_at=11)).alerts
    assert [e.status for e in fired] == ["firing"]
    return p, clock, fired[0]


def test_an_open_alert_of_an_entity_that_went_silent_resolves_at_its_last_point():
    p, clock, firing = _silent_after_an_alert(60.0)
    clock.now = 59.0
    assert not p.poll().alerts  # not silent long enough
    clock.now = 59.0 + CHECK_EVERY_S  # the next look (the open alerts are looked at every CHECK_EVERY_S at most)
    done = p.process(items("b", 0, 1))  # while other entities keep sending
    [resolved] = done.alerts
    assert (resolved.status, resolved.alert_id, resolved.ts) == ("resolved", firing.alert_id, 1011.0)
    assert resolved.source == Source("m", 0, 11) and resolved.score >= firing.score  # the last point; the peak
    assert done.held["a"] == Source("m", 0, 11)  # the closed alert goes into "a"'s next checkpoint
    assert not p.alerts.firing("a")
    clock.now = 1000.0
    assert not p.poll().alerts  # resolved once
    p.close()


def test_without_resolve_idle_s_or_with_a_frozen_clock_a_silent_alert_stays_open():
    p, clock, _ = _silent_after_an_alert(0)
    clock.now = 1e6
    assert not p.poll().alerts and p.alerts.firing("a")
    p.close()
    p, _, _ = _silent_after_an_alert(60.0)  # the clock never moves (a replay): nothing is ever silent
    assert not p.poll().alerts and p.alerts.firing("a")
    p.close()


def test_an_entity_evicted_with_an_open_alert_resolves_it_at_its_last_point():
    p, clock, firing = _silent_after_an_alert(0, **{"input.max_entities": 1, "input.entity_idle_s": 0})
    done = p.process(items("b", 0, 1))  # "a" makes room for "b"
    assert done.evicted == ["a"]
    assert [(e.status, e.alert_id, e.ts) for e in done.alerts] == [("resolved", firing.alert_id, 1011.0)]
    p.close()
