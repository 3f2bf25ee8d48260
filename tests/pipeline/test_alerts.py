"""The alert state machine: streaks, cooldown, peak score, deterministic ids, top channels, warm-up, state."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.config import AlertingConfig
from streamdet.pipeline.alerts import AlertManager, alert_id
from streamdet.types import Source

CHANNELS = ("cpu", "mem", "disk", "net")
MODEL = {"name": "m", "sha256": "ab" * 32}
CONTRIB = np.array([1.0, 6.0, 3.0, 0.0])


def run(manager, overs, scores=None, warm=True, entity="e"):
    events = []
    for i, over in enumerate(overs):
        score = scores[i] if scores else (5.0 if over else 0.1)
        event = manager.update(entity, float(i), score, 1.0, over, CONTRIB, Source("t", 0, i), warm=warm)
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


def test_resolved_carries_the_peak_score_of_the_episode():
    m = AlertManager(AlertingConfig(min_consecutive=1, cooldown=1), CHANNELS, MODEL)
    events = run(m, [1, 1, 1, 0], scores=[2.0, 9.0, 3.0, 0.1])
    assert [e.score for _, e in events] == [2.0, 9.0]


def test_top_channels_are_shares_in_order():
    m = AlertManager(AlertingConfig(min_consecutive=1, top_channels=2), CHANNELS, MODEL)
    (_, event), = run(m, [1])
    assert [c["name"] for c in event.top_channels] == ["mem", "disk"]
    assert np.isclose(event.top_channels[0]["share"], 0.6) and np.isclose(event.top_channels[1]["share"], 0.3)


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


@pytest.mark.parametrize("cooldown,rate", [(7, 0.08), (3, 0.5), (25, 0.3), (1, 0.9)])
def test_update_many_equals_point_by_point(cooldown, rate):
    """Quiet chunks and firing chunks that do not resolve take the counter-only paths; chunks that fire or resolve,
    and warm-up chunks, step point by point: events and state must equal single steps."""
    rng = np.random.default_rng(3)
    over = rng.random(400) < rate
    over[100:130] = True  # a long episode: fires, stays firing across chunks, resolves later
    scores = np.where(over, 5.0, 0.1) + rng.random(400)
    cfg = AlertingConfig(min_consecutive=2, cooldown=cooldown)
    chunked, single = AlertManager(cfg, CHANNELS, MODEL), AlertManager(cfg, CHANNELS, MODEL)
    contrib = np.tile(CONTRIB, (400, 1))
    got, want = [], []
    for lo in range(0, 400, 10):
        warm = lo >= 20
        ts = np.arange(lo, lo + 10, dtype=np.float64)
        sources = [Source("t", 0, i) for i in range(lo, lo + 10)]
        got += chunked.update_many("e", ts, scores[lo:lo + 10], np.ones(10), over[lo:lo + 10], contrib[lo:lo + 10],
                                   sources, warm=warm)
        for i in range(lo, lo + 10):
            event = single.update("e", float(i), float(scores[i]), 1.0, bool(over[i]), contrib[i], Source("t", 0, i),
                                  warm=warm)
            want += [event] if event else []
        assert chunked.state_dict("e") == single.state_dict("e")
    assert [e.to_message() for e in got] == [e.to_message() for e in want]
    assert want and all(type(v) is not np.int64 for v in chunked.state_dict("e").values())
