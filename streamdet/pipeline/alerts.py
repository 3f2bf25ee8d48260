"""Turn per-point decisions into alert events with a per-entity state machine.

An entity fires after `min_consecutive` consecutive points over its threshold and resolves after `cooldown`
consecutive points under it, or, with `resolve_quantile`, under a lower resolve level (hysteresis: an anomaly whose
score hovers just under the threshold stays one alert rather than a train of short ones). The alert id is a hash
of (entity, start_ts, model sha256): the firing event and its resolved event share it and `status` tells them
apart, so a consumer deduplicates redelivered events on (alert_id, status), and a replay of the same data through
the same model produces the same ids.
Warm-up points (edge-padded windows) never fire and never count toward a streak.
An alert names the channels of the row where it fired, or with `attribute_at: onset` those of the first row of the
run that fired it (its start_ts row, `min_consecutive` - 1 rows earlier, before the anomaly spreads to other channels
or moves the window's median; injected validation anomalies tie the two: docs/evaluation.md "Alert attribution").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..config import AlertingConfig
from ..types import describe_source
from .attribution import attributed

ALERT_ID_HEX = 32  # 128 bits of the sha256


def alert_id(entity: str, start_ts: float, model_sha256: str) -> str:
    """Deterministic id of one alert episode."""
    key = f"{entity}\x00{start_ts!r}\x00{model_sha256}".encode()
    return hashlib.sha256(key).hexdigest()[:ALERT_ID_HEX]


def top_channels(contrib: np.ndarray, channels: Sequence[str], k: int) -> list[dict]:
    """The k channels with the largest `contrib` [C], each with its share of the positive part (shares sum to 1).

    Contributions standardised per channel (pipeline/attribution.py) are negative where a channel is quieter than
    usual; those rank by their value too (share 0), so a long ranking stays ordered past the positive ones. None
    positive: the alert names no channel."""
    values = np.where(np.isfinite(contrib), contrib, -np.inf).astype(np.float64)  # [C]
    positive = np.maximum(values, 0.0)
    total = positive.sum()
    if total <= 0:  # no channel stands out: the alert names none
        return []
    shares = positive / total
    order = np.argsort(-values, kind="stable")[:k]
    return [{"name": channels[i], "share": float(shares[i])} for i in order]


@dataclass
class AlertEvent:
    alert_id: str
    status: str  # "firing" | "resolved"
    entity: str
    start_ts: float  # timestamp of the first over-threshold point of the episode
    ts: float  # timestamp of the point that triggered this event
    score: float  # firing: score at the trigger; resolved: peak score of the episode
    threshold: float
    top_channels: list[dict]
    model: dict  # {"name", "sha256"}
    source: Any  # source of the record that triggered this event (types.Source for Kafka records)

    def to_message(self) -> dict:
        """The JSON-able alert message of DESIGN.md §4."""
        return {"alert_id": self.alert_id, "status": self.status, "entity": self.entity, "start_ts": self.start_ts,
                "ts": self.ts, "score": self.score, "threshold": self.threshold, "top_channels": self.top_channels,
                "model": dict(self.model), "source": describe_source(self.source)}


@dataclass
class _EntityState:
    over_streak: int = 0
    under_streak: int = 0
    streak_start_ts: float = 0.0
    firing: bool = False
    alert_id: str = ""
    start_ts: float = 0.0
    peak_score: float = float("-inf")
    top: list = field(default_factory=list)
    onset_top: Optional[list] = None  # channels ranked at the first row of the current over-threshold run

    def restarted(self) -> Optional["_EntityState"]:
        """This state when another model starts scoring the entity: an open episode stays open with its id, first
        row and channels, its streaks counted afresh on the new score scale (so the new model's scores resolve it
        and its resolved event is sent); anything else is forgotten (None)."""
        if not self.firing:
            return None
        return _EntityState(firing=True, alert_id=self.alert_id, start_ts=self.start_ts, peak_score=self.peak_score,
                            top=list(self.top))


class AlertManager:
    """Per-entity firing/resolved state machine."""

    def __init__(self, cfg: AlertingConfig, channels: Sequence[str], model_info: dict,
                 model_of: Optional[Callable[[str], dict]] = None,
                 attribution_of: Optional[Callable[[str], Optional[dict]]] = None,
                 resolve_level_of: Optional[Callable[[str], float]] = None):
        self.cfg = cfg
        self.channels = tuple(channels)
        self.model = {"name": model_info["name"], "sha256": model_info["sha256"]}
        self._model_of = model_of  # entity -> {"name", "sha256"} when entities have their own bundles
        self._attribution_of = attribution_of  # entity -> its bundle's attribution record (pipeline/attribution.py)
        self._resolve_level_of = resolve_level_of  # entity -> the score an open alert must fall under (resolve_level)
        self._states: dict[str, _EntityState] = {}
        self._rank_onset = cfg.attribute_at == "onset" and cfg.min_consecutive > 1  # else onset = firing row

    def firing(self, entity: str) -> bool:
        state = self._states.get(entity)
        return bool(state and state.firing)

    def update(self, entity: str, ts: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, over: np.ndarray,
               contrib: np.ndarray, sources: list, warm: bool | np.ndarray = True,
               any_over: bool | None = None, window: Optional[np.ndarray] = None) -> list[AlertEvent]:
        """Advance the entity's state over a chunk of its points (ts, scores, thresholds, over [n], contrib [n, C],
        window [L, C]: the window that scored them, whose last n rows are the points' inputs, which some attribution
        records rank); -> the events they trigger. `warm` (for all points or per point [n]): warm=False points never
        fire nor count toward a streak. A chunk that raises no event (quiet while idle, or still firing without
        reaching the cooldown) only moves the counters (numpy); one that may fire or resolve steps point by point.
        `any_over`: over.any(), when the caller has it for a whole batch already. A single point is a chunk of one."""
        state = self._states.get(entity)
        if state is None:
            state = self._states[entity] = _EntityState()
        if warm is not True and not isinstance(warm, bool):
            warm = True if warm.all() else warm  # per point only where it differs
        if warm is False:
            state.over_streak = 0
            return []
        if warm is True and not state.firing and not (over.any() if any_over is None else any_over):
            state.over_streak = 0
            state.under_streak += len(scores)
            return []
        held = over if self._resolve_level_of is None else over | (scores >= self._resolve_level_of(entity))
        if warm is True and state.firing and self._continue_firing(state, ts, scores, over, held):
            return []
        events = []
        values = None if window is None else window[len(window) - len(scores):]  # [n, C] the points' own rows
        for j in range(len(scores)):
            if warm is not True and not warm[j]:
                state.over_streak = 0
                continue
            event = self._step(entity, state, float(ts[j]), float(scores[j]), float(thresholds[j]), bool(over[j]),
                               bool(held[j]), contrib[j], sources[j], None if values is None else values[j], window)
            if event is not None:
                events.append(event)
                state = self._states[entity]  # a resolved episode starts a fresh state
        return events

    def _step(self, entity: str, state: _EntityState, ts: float, score: float, threshold: float, over: bool,
              held: bool, contrib: np.ndarray, source: Any, values: Optional[np.ndarray] = None,
              window: Optional[np.ndarray] = None) -> AlertEvent | None:
        """One warm point: the state machine itself. `held`: the point keeps an open alert open (over its threshold,
        or at or over the resolve level)."""
        if over:
            if state.over_streak == 0:
                state.streak_start_ts = ts
                if not state.firing and self._rank_onset:
                    state.onset_top = self._ranked(entity, contrib, values, window)
            state.over_streak += 1
        else:
            state.over_streak = 0
        state.under_streak = 0 if over or (held and state.firing) else state.under_streak + 1
        if state.firing:
            return self._while_firing(entity, state, ts, score, threshold, source)
        if state.over_streak >= self.cfg.min_consecutive:
            return self._fire(entity, state, ts, score, threshold, contrib, source, values, window)
        return None

    def _continue_firing(self, state: _EntityState, ts: np.ndarray, scores: np.ndarray, over: np.ndarray,
                         held: np.ndarray) -> bool:
        """Advance a firing entity over a chunk in which it does not resolve; False (state untouched) otherwise."""
        n = len(over)
        steps = np.arange(n)
        last_held = np.maximum.accumulate(np.where(held, steps, -1))  # [n] latest step that kept the alert open
        under = np.where(last_held >= 0, steps - last_held, state.under_streak + steps + 1)  # [n] under streaks
        if (under >= self.cfg.cooldown).any():
            return False
        before = np.concatenate(([state.over_streak > 0], over[:-1]))
        run_starts = np.flatnonzero(over & ~before)  # steps where a new over-threshold run begins
        if run_starts.size:
            state.streak_start_ts = float(ts[run_starts[-1]])
        unders = np.flatnonzero(~over)
        state.over_streak = 0 if not over[-1] else int(n - 1 - unders[-1] if unders.size else state.over_streak + n)
        state.under_streak = int(under[-1])
        state.peak_score = max(state.peak_score, float(scores.max()))
        return True

    def _fire(self, entity: str, state: _EntityState, ts: float, score: float, threshold: float,
              contrib: np.ndarray, source: Any, values: Optional[np.ndarray] = None,
              window: Optional[np.ndarray] = None) -> AlertEvent:
        state.firing = True
        state.start_ts = state.streak_start_ts
        state.alert_id = alert_id(entity, state.start_ts, self.model_of(entity)["sha256"])
        state.peak_score = score
        onset = state.onset_top  # set only when alerts rank their onset row (_rank_onset)
        state.top = onset if onset is not None else self._ranked(entity, contrib, values, window)
        state.onset_top = None
        return self._event(entity, state, "firing", ts, score, threshold, source)

    def _ranked(self, entity: str, contrib: np.ndarray, values: Optional[np.ndarray],
                window: Optional[np.ndarray]) -> list[dict]:
        """The alert's top channels at one row: its contributions ranked by the bundle's attribution record."""
        attribution = self._attribution_of(entity) if self._attribution_of is not None else None
        return top_channels(attributed(np.asarray(contrib), attribution, values, window), self.channels,
                            self.cfg.top_channels)

    def _while_firing(self, entity: str, state: _EntityState, ts: float, score: float, threshold: float,
                      source: Any) -> AlertEvent | None:
        state.peak_score = max(state.peak_score, score)
        if state.under_streak < self.cfg.cooldown:
            return None
        event = self._event(entity, state, "resolved", ts, state.peak_score, threshold, source)
        self._states[entity] = _EntityState(under_streak=state.under_streak)
        return event

    def _event(self, entity: str, state: _EntityState, status: str, ts: float, score: float, threshold: float,
               source: Any) -> AlertEvent:
        return AlertEvent(alert_id=state.alert_id, status=status, entity=entity, start_ts=state.start_ts, ts=ts,
                          score=float(score), threshold=float(threshold), top_channels=list(state.top),
                          model=dict(self.model_of(entity)), source=source)

    def model_of(self, entity: str) -> dict:
        """The model that scores `entity` (alerts name it, and its sha256 is part of the alert id)."""
        return self.model if self._model_of is None else self._model_of(entity)

    def firing_entities(self) -> list[str]:
        return [entity for entity, state in self._states.items() if state.firing]

    def resolve_silent(self, entity: str, ts: float, threshold: float, source: Any) -> AlertEvent | None:
        """The entity's open alert resolved at its last point (ts, source), because nothing came after it (the
        caller decides how long is too long); None when it has none. Same id as its firing event."""
        state = self._states.get(entity)
        if state is None or not state.firing:
            return None
        event = self._event(entity, state, "resolved", ts, state.peak_score, threshold, source)
        self._states[entity] = _EntityState()
        return event

    def remove(self, entity: str) -> None:
        self._states.pop(entity, None)

    def restart(self, entity: str) -> None:
        """Another bundle scores `entity` from now on: its streaks restart, an open alert stays open (never left
        without its resolved event) and resolves on the new model's scores."""
        state = self._states.pop(entity, None)
        kept = state.restarted() if state is not None else None
        if kept is not None:
            self._states[entity] = kept

    def carry_open(self, previous: "AlertManager") -> None:
        """`restart` for every entity of `previous`, the manager of the model this one replaces (a fleet reload)."""
        for entity, state in previous._states.items():
            kept = state.restarted()
            if kept is not None:
                self._states[entity] = kept

    def state_dict(self, entity: str) -> dict:
        state = self._states.get(entity, _EntityState())
        onset = None if state.onset_top is None else [dict(t) for t in state.onset_top]
        return dict(vars(state), top=[dict(t) for t in state.top], onset_top=onset)

    def load_state(self, entity: str, state: dict) -> None:
        self._states[entity] = _EntityState(**state)
