"""The alert state machine: streaks, cooldown, peak score, deterministic ids, top channels, warm-up, state."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdet.config import AlertingConfig
from streamdet.pipeline.alerts import AlertManager, alert_id
from streamdet.types import Source

CHANNELS = ("cpu", "mem", "disk", "net")
MODEL = {"name": "m", "sha256": "ab" * 32}
CONTRIB = np.array([1.0, 6.0, 3.0, 0.0])


def update_one(manager, entity, ts, score, threshold, over, contrib, source, warm=True):
    """A single point is a chunk of one: -> its event or None."""
    events = manager.update(entity, np.array([ts]), np.array([score]), np.array([threshold]), np.array([over]),
                            contrib[None, :], [source], warm=warm)
    return events[0] if events else None


def run(manager, overs, scores=None, warm=True, entity="e"):
    events = []
    for i, over in enumerate(overs):
        score = scores[i] if scores else (5.0 if over else 0.1)
        event = update_one(manager, entity, float(i), score, 1.0, bool(over), CONTRIB, Source("t", 0, i), warm=warm)
        if event:
            events.append((i, event))
    return events


def test_fires_after_min_consecutive_and_resolves_after_cooldown():
    m = AlertManager(AlertingConfig(min_consecutive=3, cooldown=2), CHANNELS, MODEL)
    events = run(m, [1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    assert [(i, e.status) for i, e in events] == [(5, "firing"), (10, "resolved")]
    firing, resolved = events[0][1], events[1][1]
    assert firing.start_ts == 3.0 and resolved.start_ts == 3.0  # the first point of the streak
    assert firing.alert_id == resolved.alert_id == alert_id("e", 3.0, MODEL["sha256"])
    assert firing.source == Source("t", 0, 5)


def test_a_resolve_level_holds_an_alert_open_while_the_score_stays_elevated():
    """Hysteresis (alerting.resolve_quantile): points under the threshold but at or over the resolve level neither
    fire nor count toward the cooldown; without a level the same points resolve the alert."""
    overs = [1, 0, 0, 0, 0, 0, 0, 0]
    scores = [5.0, 0.7, 0.8, 0.7, 0.2, 0.2, 0.7, 0.7]
    plain = AlertManager(AlertingConfig(min_consecutive=1, cooldown=2), CHANNELS, MODEL)
    held = AlertManager(AlertingConfig(min_consecutive=1, cooldown=2), CHANNELS, MODEL, resolve_level_of=lambda e: 0.5)
    assert [(i, e.status) for i, e in run(plain, overs, scores)] == [(0, "firing"), (2, "resolved")]
    assert [(i, e.status) for i, e in run(held, overs, scores)] == [(0, "firing"), (5, "resolved")]
    assert run(held, [0, 0, 0], [0.9, 0.9, 0.9], entity="quiet") == []  # the level alone never fires


def test_resolved_carries_the_peak_score_of_the_episode():
    m = AlertManager(AlertingConfig(min_consecutive=1, cooldown=1), CHANNELS, MODEL)
    events = run(m, [1, 1, 1, 0], scores=[2.0, 9.0, 3.0, 0.1])
    assert [e.score for _, e in events] == [2.0, 9.0]


def test_top_channels_are_shares_in_order():
    m = AlertManager(AlertingConfig(min_consecutive=1, top_channels=2), CHANNELS, MODEL)
    (_, event), = run(m, [1])
    assert [c["name"] for c in event.top_channels] == ["mem", "disk"]
    assert np.isclose(event.top_channels[0]["share"], 0.6) and np.isclose(event.top_channels[1]["share"], 0.3)


def _fire_with(contribs, overs, **alerting):
    m = AlertManager(AlertingConfig(**alerting), CHANNELS, MODEL)
    events = [update_one(m, "e", float(i), 5.0 if o else 0.1, 1.0, bool(o), np.array(c, float), Source("t", 0, i))
              for i, (o, c) in enumerate(zip(overs, contribs))]
    (event,) = [e for e in events if e is not None]
    return event


def test_an_alert_names_the_channels_of_its_first_over_threshold_row():
    """min_consecutive 3: the run starts on cpu and mem dominates by its third row, where the alert fires. With
    attribute_at onset the alert names the channels of its start_ts row (cpu); by default, those of the firing row.
    A run that broke off before firing leaves nothing behind: the next run names its own first row (disk)."""
    contribs = [[0, 0, 0, 0], [9, 1, 0, 0], [1, 5, 0, 0], [0, 9, 1, 0]]
    onset = _fire_with(contribs, [0, 1, 1, 1], min_consecutive=3, attribute_at="onset")
    firing = _fire_with(contribs, [0, 1, 1, 1], min_consecutive=3)
    assert onset.ts == firing.ts == 3.0 and onset.start_ts == 1.0
    assert [c["name"] for c in onset.top_channels][:2] == ["cpu", "mem"]
    assert [c["name"] for c in firing.top_channels][:2] == ["mem", "disk"]
    broken = _fire_with([[9, 0, 0, 0], [0, 0, 0, 0], [0, 0, 7, 1], [0, 9, 0, 0], [9, 9, 0, 0]], [1, 0, 1, 1, 1],
                        min_consecutive=3, attribute_at="onset")
    assert broken.start_ts == 2.0 and broken.top_channels[0]["name"] == "disk"


def test_warm_up_points_never_fire_nor_count():
    m = AlertManager(AlertingConfig(min_consecutive=2), CHANNELS, MODEL)
    assert run(m, [1, 1, 1], warm=False) == []
    assert [i for i, _ in run(m, [1, 1])] == [1]


def test_same_input_same_ids_and_message_fields():
    def ids():
        m = AlertManager(AlertingConfig(min_consecutive=1, cooldown=1), CHANNELS, MODEL)
        return [e.alert_id for _, e in run(m, [0, 1, 0, 0, 1, 0])]

    assert ids() == ids() and len(set(ids())) == 2
    m = AlertManager(AlertingConfig(min_consecutive=1), CHANNELS, MODEL)
    (_, event), = run(m, [1])
    message = event.to_message()
    assert set(message) == {"alert_id", "status", "entity", "start_ts", "ts", "score", "threshold", "top_channels",
                            "model", "source"}
    assert message["source"] == {"topic": "t", "partition": 0, "offset": 0} and message["model"] == MODEL


def test_state_round_trip_continues_the_episode():
    a = AlertManager(AlertingConfig(min_consecutive=2, cooldown=2), CHANNELS, MODEL)
    run(a, [1, 1, 1])  # firing
    b = AlertManager(AlertingConfig(min_consecutive=2, cooldown=2), CHANNELS, MODEL)
    b.load_state("e", a.state_dict("e"))
    assert b.firing("e")
    (_, resolved), = run(b, [0, 0])
    assert resolved.status == "resolved" and resolved.alert_id == alert_id("e", 0.0, MODEL["sha256"])


@settings(max_examples=40, deadline=None)
@given(cooldown=st.integers(1, 25), min_consecutive=st.integers(1, 4), rate=st.floats(0.02, 0.95),
       cuts=st.lists(st.integers(1, 25), min_size=1, max_size=8), seed=st.integers(0, 2**16),
       resolve_level=st.sampled_from([None, 0.6]), attribute_at=st.sampled_from(["firing", "onset"]))
def test_how_points_are_chunked_changes_nothing(cooldown, min_consecutive, rate, cuts, seed, resolve_level,
                                                attribute_at):
    """One path for every chunk: quiet chunks and firing chunks that do not resolve take the counter-only paths,
    chunks that fire or resolve, warm-up chunks and chunks with per-point warm flags step point by point. Events
    and state after every chunk equal those of the same points one at a time (a chunk of one), with and without a
    resolve level (about half the points under the threshold are over it); an alert names its onset row's channels
    (attribute_at onset) whichever chunk that row came in."""
    rng = np.random.default_rng(seed)
    n = 300
    over = rng.random(n) < rate
    over[100:130] = True  # a long episode: fires, stays firing across chunks, resolves later
    scores = np.where(over, 5.0, 0.1) + rng.random(n)
    warm = np.arange(n) >= 20
    warm[rng.random(n) < 0.02] = False  # a point that may not count (a non-finite score in the daemon)
    warm[70:160] = True  # every chunk (at most 25 points) that meets the episode counts, so it fires in each case
    cfg = AlertingConfig(min_consecutive=min_consecutive, cooldown=cooldown, attribute_at=attribute_at)
    level = None if resolve_level is None else (lambda entity: resolve_level)
    chunked, single = (AlertManager(cfg, CHANNELS, MODEL, resolve_level_of=level) for _ in range(2))
    contrib = rng.random((n, len(CHANNELS)))  # each row its own ranking: which row an alert ranks shows
    ts = np.arange(n, dtype=np.float64)
    sources = [Source("t", 0, i) for i in range(n)]
    got, want, lo = [], [], 0
    for size in cuts * n:
        if lo >= n:
            break
        hi = min(n, lo + size)
        chunk_warm = warm[lo:hi] if rng.random() < 0.5 else bool(warm[lo:hi].all())  # a flag, or per point
        flags = np.broadcast_to(chunk_warm, hi - lo)
        got += chunked.update("e", ts[lo:hi], scores[lo:hi], np.ones(hi - lo), over[lo:hi], contrib[lo:hi],
                              sources[lo:hi], warm=chunk_warm)
        for i in range(lo, hi):
            event = update_one(single, "e", ts[i], scores[i], 1.0, over[i], contrib[i], sources[i],
                               warm=bool(flags[i - lo]))
            want += [event] if event else []
        assert chunked.state_dict("e") == single.state_dict("e")
        lo = hi
    assert [e.to_message() for e in got] == [e.to_message() for e in want]
    assert want and all(type(v) is not np.int64 for v in chunked.state_dict("e").values())
