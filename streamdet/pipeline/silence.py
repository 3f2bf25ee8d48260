"""Open alerts of entities that went silent: resolved at their last point after `alerting.resolve_idle_s`.

An alert resolves when `cooldown` points fall under the threshold. An entity that stops sending (a host switched off
or cut off while anomalous) sends no such points, so its alert would stay open on the alerts topic, and in
Alertmanager through the bridge's resends, for ever. Here the daemon's clock decides that an entity is silent (a
replay's frozen clock never does, so backtests are unchanged); the event itself is its last point's: that point's
timestamp and source, the episode's id and peak score, so a consumer sees an ordinary resolved event.
"""

from __future__ import annotations

from typing import Callable, Collection

CHECK_EVERY_S = 10.0  # at most this long between two looks at the open alerts (they are few; the look is O(open))


class SilenceWatch:
    def __init__(self, idle_s: float, clock: Callable[[], float]):
        self.idle_s = idle_s  # 0: off
        self.clock = clock
        self._next = 0.0

    def due(self) -> bool:
        """Time for a look (never when off)."""
        if self.idle_s <= 0:
            return False
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + min(CHECK_EVERY_S, self.idle_s / 4)
        return True

    def resolve(self, alerts, windows, thresholds, busy: Collection[str]) -> list:
        """Resolved events of the open alerts whose entity has sent nothing for idle_s and owes no score (nothing
        pending in its window, nothing queued or in flight: `busy`)."""
        now, events = self.clock(), []
        for entity in alerts.firing_entities():
            last = windows.last_point(entity)
            if last is None or entity in busy:
                continue
            active, ts, source, pending = last
            if pending or now - active < self.idle_s:
                continue
            event = alerts.resolve_silent(entity, ts, thresholds.current(entity), source)
            if event is not None:
                events.append(event)
        return events
