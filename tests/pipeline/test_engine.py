"""engine.Pipeline with a real scripted torch module: every record scored once, offsets safe to commit."""

from __future__ import annotations

import numpy as np
import torch

from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline

from ..conftest import SMD_CONFIG
from .helpers import DeviationDetector, FakeBundle, exponential_calibration, record

L, C, STRIDE = 8, 3, 4


class FrozenClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_pipeline(max_batch=4, max_wait_ms=50.0, stride=STRIDE):
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={stride}", f"scoring.max_batch={max_batch}",
                                   f"scoring.max_wait_ms={max_wait_ms}", "alerting.min_consecutive=1"])
    bundle = FakeBundle(torch.jit.script(DeviationDetector()), tuple("abc"), L, exponential_calibration())
    clock = FrozenClock()
    return Pipeline(cfg, bundle, clock), clock


def items(entity, start, n, partition=0, spike_at=None):
    out = []
    for i in range(start, start + n):
        values = np.full(C, 100.0 if i == spike_at else np.sin(i / 3.0))
        out.append((record(entity, 1000.0 + i, values), ("m", partition, i)))
    return out


def test_every_record_scored_exactly_once_including_warm_up_and_drain():
    p, _ = make_pipeline()
    scored = []
    for chunk in range(0, 37, 5):  # 37 records: warm-up, full strides, and a partial stride at the end
        scored += p.process(items("e", chunk, min(5, 37 - chunk))).scored
    scored += p.drain().scored
    assert sorted(s.source[2] for s in scored) == list(range(37))
    warm = [s.warm for s in sorted(scored, key=lambda s: s.source[2])]
    assert warm[:STRIDE] == [False] * STRIDE and all(warm[STRIDE:]), "only points scored before the window filled"


def test_pending_floor_tracks_the_lowest_unscored_offset():
    p, clock = make_pipeline(max_batch=100, max_wait_ms=1000)
    p.process(items("e", 0, 6, partition=0) + items("f", 0, 3, partition=1))
    assert p.pending_floor() == {("m", 0): 0, ("m", 1): 0}  # nothing scored yet (batch not due)
    clock.now = 2.0
    result = p.poll()
    assert {s.source[2] for s in result.scored if s.source[1] == 0} == {0, 1, 2, 3}
    assert p.pending_floor() == {("m", 0): 4, ("m", 1): 0}
    p.drain()
    assert p.pending_floor() == {}


def test_bad_records_are_reported_and_the_rest_scored():
    p, _ = make_pipeline(max_batch=1)
    batch = items("e", 0, 4) + [(b"not json", ("m", 0, 4)), (record("e", 1.0, [1, 2]), ("m", 0, 5))] + \
        [(record("e", 1000.0 + i, np.zeros(C)), ("m", 0, i + 2)) for i in range(4, 8)]
    result = p.process(batch)
    assert [(r[2], r[1][2]) for r in result.rejected] == [("not_json", 4), ("wrong_width", 5)]
    assert sorted(s.source[2] for s in result.scored + p.drain().scored) == [0, 1, 2, 3, 6, 7, 8, 9]


def test_interleaved_entities_get_their_own_windows_and_alerts():
    p, _ = make_pipeline(max_batch=1)
    stream = [x for pair in zip(items("e", 0, 40, spike_at=30), items("f", 0, 40)) for x in pair]
    result = p.process(stream)
    alerts = [a for a in result.alerts + p.drain().alerts if a.status == "firing"]
    assert {a.entity for a in alerts} == {"e"}
    assert any(1030.0 - STRIDE <= a.start_ts <= 1030.0 for a in alerts)  # the spike lifts its window's mean too


def test_state_round_trip_mid_stream_gives_identical_scores():
    a, _ = make_pipeline(max_batch=1)
    a.process(items("e", 0, 21))
    b, _ = make_pipeline(max_batch=1)
    b.load_state("e", a.state_dict("e"))
    rest = items("e", 21, 30, spike_at=35)
    sa = [(s.source, s.score, s.threshold, s.over) for s in a.process(rest).scored + a.drain().scored]
    sb = [(s.source, s.score, s.threshold, s.over) for s in b.process(rest).scored + b.drain().scored]
    assert len(sa) == 31 and sa == sb  # record 20 waited in a partial stride when the state was taken
