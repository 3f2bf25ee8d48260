"""Latency-adaptive scoring and per-entity bundles in engine.Pipeline, with real scripted torch modules."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.config import load_config
from streamdet.pipeline.engine import RESULT_CHECK_S, Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.types import Source

from ..conftest import SMD_CONFIG
from .helpers import DeviationDetector, FakeBundle, LastValueDetector, exponential_calibration, record
from .test_engine import FrozenClock

L, C = 8, 3


def config(max_poll=100, max_batch=16, stride=4, adaptive=True) -> PipelineSettings:
    cfg = load_config(SMD_CONFIG, [f"scoring.stride={stride}", f"scoring.max_batch={max_batch}",
                                   "scoring.max_wait_ms=1000", f"kafka.max_poll_records={max_poll}",
                                   f"scoring.adaptive={adaptive}", "alerting.min_consecutive=1", "threshold.warmup=0"])
    return PipelineSettings.of(cfg)


def bundle(module=None, sha="0", calibration=None):
    return FakeBundle(module or torch.jit.script(DeviationDetector()), tuple("abc"), L,
                      calibration or exponential_calibration(), sha256=sha * 64)


def poll(entities, start, values=None):
    """One record per entity at step `start` (offsets unique per entity and step)."""
    out = []
    for e, entity in enumerate(entities):
        v = np.full(C, np.sin(start / 3.0) if values is None else values[e])
        out.append((record(entity, 1000.0 + start, v), Source("m", 0, start * 1000 + e)))
    return out


@pytest.mark.parametrize("overlap", [False, True])
def test_at_light_load_every_record_is_scored_in_the_poll_that_brought_it(overlap):
    p = Pipeline(config(), bundle(), FrozenClock(), overlap=overlap)  # the clock never moves: no max_wait flush
    entities = [f"e{i}" for i in range(5)]
    for step in range(3 * L):
        chunks = p.process(poll(entities, step)).scored
        deadline = time.monotonic() + 10
        while sum(len(c) for c in chunks) < 5 and time.monotonic() < deadline:
            # the model thread is scoring them: the daemon's next poll comes within RESULT_CHECK_S and takes them
            assert p.seconds_until_due() is not None and p.seconds_until_due() <= RESULT_CHECK_S
            time.sleep(RESULT_CHECK_S)
            chunks += p.poll().scored
        scored = sorted(source.offset for chunk in chunks for source in chunk.sources)
        assert scored == [step * 1000 + e for e in range(5)], f"step {step}"
    assert p.pace.stride == 1
    p.close()


def test_a_backlog_raises_the_stride_and_fewer_windows_are_scored():
    p = Pipeline(config(max_poll=10), bundle(), FrozenClock(), overlap=False)
    entities = [f"e{i}" for i in range(10)]
    windows = 0
    for step in range(40):  # every poll is full: the daemon is behind
        windows += sum(size for size, _ in p.process(poll(entities, step)).batches)
    assert p.pace.stride == 4
    assert windows < 40 * 10 / 2  # stride 1 would have scored one window per record


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.just(0), st.integers(min_value=0, max_value=60)), min_size=1, max_size=25),
       st.lists(st.sampled_from([0, 0, 10, 100]), min_size=25, max_size=25))
def test_every_record_is_scored_exactly_once_whatever_the_stride_does(poll_sizes, backlogs):
    """Polls of random sizes and backlogs make the stride rise and fall; each record still gets one score."""
    clock = FrozenClock()
    p = Pipeline(config(max_poll=30, stride=6), bundle(), clock, overlap=False)
    step, seen = 0, []
    for size, backlog in zip(poll_sizes, backlogs):
        batch = []
        for k in range(size):
            entity = f"e{k % 3}"
            batch.append((record(entity, 1000.0 + step, np.full(C, step % 7)), Source("m", 0, step)))
            step += 1
        seen += [s for chunk in p.process(batch, backlog=backlog).scored for s in chunk.sources]
        clock.now += 0.6  # two calm polls in a row halve the stride
    seen += [s for chunk in p.drain().scored for s in chunk.sources]
    assert sorted(s.offset for s in seen) == list(range(step))
    assert len(seen) == step


def test_a_falling_stride_scores_the_points_already_waiting_once():
    clock = FrozenClock()
    p = Pipeline(config(max_poll=12, stride=8), bundle(), clock, overlap=False)
    step, seen = 0, []

    def send(n):
        nonlocal step
        batch = [(record("e", 1000.0 + step + k, np.full(C, k % 5)), Source("m", 0, step + k)) for k in range(n)]
        step += n
        seen.extend(s for chunk in p.process(batch).scored for s in chunk.sources)

    for _ in range(6):
        send(12)  # full polls: the stride climbs to 8
    send(5)  # 5 points wait for a stride of 8
    for _ in range(3):
        clock.now += 1.0
        send(0)  # calm: the stride halves
    assert p.pace.stride < 5
    send(1)  # the waiting points and this one go out together, each once
    assert sorted(s.offset for s in seen) == list(range(step))


def test_once_the_load_drops_points_waiting_for_a_raised_stride_are_scored_without_waiting_for_it():
    """A burst raises the stride; when the polls turn calm the points already waiting are scored at the next polls
    (each once), though the stride has not relaxed yet and the clock never moves (no max_delay_s either)."""
    p = Pipeline(config(max_poll=10, stride=8), bundle(), FrozenClock(), overlap=False)
    entities = [f"e{i}" for i in range(10)]
    seen = []
    for step in range(12):  # full polls: the stride climbs to 8
        seen += [s for chunk in p.process(poll(entities, step)).scored for s in chunk.sources]
    assert p.pace.stride == 8
    seen += [s for chunk in p.process(poll(entities[:2], 12)).scored for s in chunk.sources]  # a calm poll
    waiting = sorted(s.offset for s in p.pending_sources())
    assert len(waiting) > 2  # points of several entities wait for the rest of their stride
    for _ in range(3):
        seen += [s for chunk in p.poll().scored for s in chunk.sources]  # calm, empty polls
    assert p.pace.stride == 8 and list(p.pending_sources()) == []
    assert sorted(s.offset for s in seen) == sorted([step * 1000 + e for step in range(12) for e in range(10)]
                                                    + [12000, 12001])


def test_points_waiting_for_the_stride_stay_while_records_are_still_behind_the_consumer():
    """At saturation the client's fetch queue runs dry between fetches: empty polls with a backlog keep every
    entity's stride whole (no partial windows, one model call per stride); once the backlog is gone the points
    waiting are scored at once."""
    p = Pipeline(config(max_poll=10, stride=8), bundle(), FrozenClock(), overlap=False)
    entities = [f"e{i}" for i in range(10)]
    for step in range(12):  # full polls: the stride is at its ceiling
        p.process(poll(entities, step), backlog=1000)
    p.process(poll(entities[:3], 12), backlog=1000)
    waiting = sorted(s.offset for s in p.pending_sources())
    assert p.pace.stride == 8 and len(waiting) > 3
    scored = []
    for _ in range(3):
        scored += [s for chunk in p.poll(backlog=1000).scored for s in chunk.sources]
    assert scored == [] and sorted(s.offset for s in p.pending_sources()) == waiting
    for _ in range(3):
        scored += [s for chunk in p.poll(backlog=0).scored for s in chunk.sources]
    assert sorted(s.offset for s in scored) == waiting and list(p.pending_sources()) == []
    p.close()


def test_per_entity_bundles_score_route_threshold_and_name_their_entities():
    """Entity 'a' has its own bundle (scores = channel 0 itself, calibrated on small scores); 'b' uses the default."""
    from streamdet.bundleset import BundleSet

    low_calibration = exponential_calibration(seed=1)
    low_calibration["pot"]["init_threshold"] = 0.5
    own = bundle(torch.jit.script(LastValueDetector()), sha="a", calibration=low_calibration)
    default = bundle(sha="d")
    bundles = BundleSet(default=default, entity_bundles={"a": own})
    p = Pipeline(config(stride=1, adaptive=False), bundles, FrozenClock(), overlap=False)
    assert p.thresholds.prepared == {"a" * 64, "d" * 64}  # each bundle's threshold built at start, not at a score
    values = [[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]]
    results = [p.process(poll(["a", "b"], step, values)) for step in range(2 * L)]
    chunks = {c.entity: c for r in results for c in r.scored}
    assert chunks["a"].scores[-1] == pytest.approx(50.0)  # LastValueDetector: channel 0
    assert chunks["b"].scores[-1] == pytest.approx(0.0)  # DeviationDetector: a constant input deviates by 0
    assert p.thresholds.current("a") != p.thresholds.current("b")  # each from its own bundle's calibration
    alerts = [a for r in results for a in r.alerts]
    assert alerts and {a.entity for a in alerts} == {"a"}
    assert all(a.model["sha256"] == "a" * 64 for a in alerts)
    assert p.model_sha256_of("a") == "a" * 64 and p.model_sha256_of("b") == "d" * 64

    replacement = BundleSet(default=default, entity_bundles={"a": bundle(sha="c")})
    p.replace_model(replacement)  # 'a' changed bundle: its thresholds restart from the new calibration
    assert p.model_sha256_of("a") == "c" * 64 and p.thresholds.prepared == {"c" * 64, "d" * 64}
    assert p.thresholds.current("a") == pytest.approx(p.thresholds.current("b"))


def test_a_fleet_directory_that_gains_an_entity_bundle_serves_its_calibration_and_identity():
    """A bundle directory holding only its default serves as a fleet; when a hot reload adds an entity's own bundle,
    that entity's thresholds start from its bundle's calibration and its alerts name that bundle."""
    from streamdet.bundleset import BundleSet

    low_calibration = exponential_calibration(seed=1)
    low_calibration["pot"]["init_threshold"] = 0.5
    default = bundle(sha="d")
    p = Pipeline(config(stride=1, adaptive=False), BundleSet(default=default), FrozenClock(), overlap=False)
    values = [[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]]
    p.process(poll(["a", "b"], 0, values))
    own = bundle(torch.jit.script(LastValueDetector()), sha="a", calibration=low_calibration)
    p.replace_model(BundleSet(default=default, entity_bundles={"a": own}))
    results = [p.process(poll(["a", "b"], step, values)) for step in range(1, 2 * L)]
    assert p.thresholds.current("a") != pytest.approx(p.thresholds.current("b"))
    alerts = [a for r in results for a in r.alerts]
    assert alerts and all(a.entity == "a" and a.model["sha256"] == "a" * 64 for a in alerts)


def test_a_mixed_batch_is_split_by_bundle_and_put_back_in_order():
    from streamdet.bundleset import BundleSet

    own = bundle(torch.jit.script(LastValueDetector()), sha="a")
    p = Pipeline(config(stride=1, adaptive=False, max_batch=64), BundleSet(default=bundle(sha="d"),
                                                                          entity_bundles={"a1": own, "a2": own}),
                 FrozenClock(), overlap=False)
    entities = ["a1", "b1", "a2", "b2"]
    values = [[1.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [2.0, 0, 0]]
    for step in range(L):
        p.process(poll(entities, step, values))
    p.flush_batches()
    p.process(poll(entities, L, values))
    last = {c.entity: c.scores[-1] for c in p.flush_batches().scored}  # one batch of all four, split by bundle
    assert last == pytest.approx({"a1": 1.0, "b1": 0.0, "a2": 2.0, "b2": 0.0})


@pytest.mark.parametrize("mode", ["fleet", "per-entity"])
def test_an_alert_open_at_a_model_swap_resolves_on_the_new_models_scores(mode):
    """An alert firing when its entity's bundle is replaced keeps its id and resolves once the new model's scores
    stay under its threshold for the cooldown: a firing event is never left without its resolved event."""
    from streamdet.bundleset import BundleSet

    def served(sha):
        own = bundle(torch.jit.script(LastValueDetector()), sha=sha)
        return own if mode == "fleet" else BundleSet(default=bundle(sha="d"), entity_bundles={"a": own})

    p = Pipeline(config(stride=1, adaptive=False), served("a"), FrozenClock(), overlap=False)
    quiet, loud = [[0.0, 0.0, 0.0]], [[50.0, 0.0, 0.0]]
    events = [e for step in range(L) for e in p.process(poll(["a"], step, quiet)).alerts]
    events += [e for step in range(L, 2 * L) for e in p.process(poll(["a"], step, loud)).alerts]
    assert [e.status for e in events] == ["firing"]
    p.replace_model(served("c"))
    after = [e for step in range(2 * L, 4 * L) for e in p.process(poll(["a"], step, quiet)).alerts]
    assert [e.status for e in after] == ["resolved"]
    assert after[0].alert_id == events[0].alert_id and after[0].model["sha256"] == "c" * 64


def test_each_entity_holds_its_alert_at_its_own_bundles_resolve_level():
    """alerting.resolve_quantile: an open alert resolves only once the score falls under that quantile of the
    validation scores of the bundle scoring the entity. A stretch at 5.0, under both thresholds, is elevated for
    the bundle calibrated on Exp(1) scores (90th percentile 2.3) and ordinary for the one calibrated on 10 x Exp(1)
    (23): the first entity's alert stays open through it, the second's resolves after the cooldown."""
    from streamdet.bundleset import BundleSet

    cfg = load_config(SMD_CONFIG, ["scoring.stride=1", "scoring.adaptive=false", "alerting.min_consecutive=1",
                                   "alerting.cooldown=3", "alerting.resolve_quantile=0.9", "threshold.warmup=0"])
    wide = exponential_calibration()
    wide = {**wide, "pot": {**wide["pot"], "init_threshold": 10 * wide["pot"]["init_threshold"],
                            "peaks": [10 * v for v in wide["pot"]["peaks"]]}, "sample": [10 * v for v in wide["sample"]]}
    last_value = torch.jit.script(LastValueDetector())
    served = BundleSet(default=bundle(last_value, sha="d"), entity_bundles={"w": bundle(last_value, "w", wide)})
    p = Pipeline(PipelineSettings.of(cfg), served, FrozenClock(), overlap=False)
    entities = ["n", "w"]
    steps = [[0.0, 0, 0]] * L + [[900.0, 0, 0]] * 2 + [[5.0, 0, 0]] * 20 + [[0.0, 0, 0]] * 5
    events = []
    for step, values in enumerate(steps):
        p.process(poll(entities, step, [values, values]))
        events += [(step, e.entity, e.status) for e in p.flush_batches().alerts]
    assert [(s, entity, status) for s, entity, status in events if status == "firing"] == [(L, "n", "firing"),
                                                                                          (L, "w", "firing")]
    resolved = {entity: s for s, entity, status in events if status == "resolved"}
    assert resolved["w"] == L + 2 + 2  # the third point of the stretch
    assert resolved["n"] == L + 2 + 20 + 2  # the third point after it
