"""Entities that stop sending: an alert a silent one left open resolves, and one evicted at the cap leaves every stage.

An alert resolves when `alerting.cooldown` points fall under the threshold. A host that stops sending while
anomalous (switched off, cut off) sends no such points, so its alert would stay open on the alerts topic, and in
Alertmanager through the bridge's resends, for ever. After `alerting.resolve_idle_s` without a record on the
daemon's clock (a replay's frozen clock never gets there, so backtests are unchanged) the alert resolves at the
entity's last point: that point's timestamp and source, the episode's id and peak score, an ordinary resolved event.

The window store evicts the least recently used entity idle `input.entity_idle_s` when a new one needs its place at
`input.max_entities`. Once the evicted entity's last points are scored (and no row of it is being assembled), its
threshold, alert (resolved at its last point, as above), standardiser and routing state go too and the step names it
in `StepResult.evicted`, for the delivery to drop its series and erase its checkpoint: so the cap bounds all
per-entity state, and a restart does not bring back hosts that are gone. One that came back meanwhile keeps its state.
"""

from __future__ import annotations

from typing import Any, Callable

from ..types import StepResult

CHECK_EVERY_S = 10.0  # at most this long between two looks at the open alerts (a look is O(entities): rare)


class Departures:
    def __init__(self, resolve_idle_s: float, clock: Callable[[], float]):
        self.resolve_idle_s = resolve_idle_s  # 0: silence never resolves an alert
        self.clock = clock
        self._next_look = 0.0
        self._evicting: dict[str, tuple[float, Any]] = {}  # evicted from the windows -> (newest ts, its source)

    def settle(self, pipeline, done: StepResult) -> None:
        """At the end of a pipeline step: resolve the open alerts of silent entities (when a look is due), and let
        evicted entities go once nothing of theirs is left to score."""
        if self._look_due():
            now, busy = self.clock(), pipeline.unscored_entities()
            for entity in pipeline.alerts.firing_entities():
                last = pipeline.windows.last_point(entity)
                if last is None or entity in busy:
                    continue
                active, ts, source, pending = last
                if not pending and now - active >= self.resolve_idle_s:
                    self._resolve(pipeline, entity, ts, source, done)
                    done.held[entity] = source  # its closed alert goes into its next checkpoint
        for entity, ts, source in pipeline.windows.take_evicted():
            self._evicting[entity] = (ts, source)
        if not self._evicting:
            return
        busy = pipeline.unscored_entities()
        intake = pipeline.intake
        for entity in sorted(self._evicting):
            if entity in pipeline.windows:  # back already: it keeps its state
                del self._evicting[entity]
            elif entity not in busy and not (intake is not None and intake.holds(entity)):
                ts, source = self._evicting.pop(entity)
                self._resolve(pipeline, entity, ts, source, done)
                pipeline.drop_scoring_state(entity)
                done.evicted.append(entity)

    def _look_due(self) -> bool:
        if self.resolve_idle_s <= 0:
            return False
        now = self.clock()
        if now < self._next_look:
            return False
        self._next_look = now + min(CHECK_EVERY_S, self.resolve_idle_s / 4)
        return True

    @staticmethod
    def _resolve(pipeline, entity: str, ts: float, source: Any, done: StepResult) -> None:
        event = pipeline.alerts.resolve_silent(entity, ts, pipeline.thresholds.current(entity), source)
        if event is not None:
            done.alerts.append(event)
