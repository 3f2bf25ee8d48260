"""The Alertmanager bridge's Prometheus series (`streamdet_alertmanager_*`) and readiness, served by the shared
`Endpoints` server as the daemon's io/metrics.py are."""

from __future__ import annotations

import time
from typing import Optional

from prometheus_client import Counter, Gauge

from .endpoints import Endpoints
from .metrics import HEALTH_STALE_S


class BridgeMetrics(Endpoints):
    """The Alertmanager bridge's series (`streamdet_alertmanager_*`) and endpoints: /readyz is 200 only while it holds
    its partitions and the last request to Alertmanager was answered (503 while Alertmanager is down)."""

    not_ready_text = b"not ready: Alertmanager or the broker unreachable, or no partitions assigned\n"

    def __init__(self, host: str, port: int, request_timeout_s: float = 0.0):
        super().__init__(host, port)
        self.request_timeout_s = request_timeout_s  # one request may hold the loop this long without a beat
        r = self.registry
        self._messages = Counter("streamdet_alertmanager_messages", "Alert messages consumed", ["status"], registry=r)
        self._posts = Counter("streamdet_alertmanager_posts", "Requests to Alertmanager", ["outcome"], registry=r)
        self._dead_letters = Counter("streamdet_alertmanager_dead_letters", "Messages sent to the bridge's dead-letter "
                                     "topic", ["reason"], registry=r)
        self._open_alerts = Gauge("streamdet_alertmanager_open_alerts", "Firing alerts re-posted every resend "
                                  "interval", registry=r)
        self._up = Gauge("streamdet_alertmanager_up", "1 when the last request to Alertmanager was answered",
                        registry=r)
        self._beat = time.monotonic()
        self._assigned = self._reachable = self._broker = False
        self._stopped = False

    def message(self, status: str) -> None:
        """An alert message of `status` (firing, resolved) was consumed."""
        self._messages.labels(status).inc()

    def posted(self, outcome: str) -> None:
        """A request to Alertmanager ended with `outcome`."""
        self._posts.labels(outcome).inc()

    def dead_letter(self, reason: str) -> None:
        self._dead_letters.labels(reason).inc()

    def open_alerts(self, n: int) -> None:
        """Firing alerts the bridge re-posts every resend interval."""
        self._open_alerts.set(n)

    def heartbeat(self) -> None:
        self._beat = time.monotonic()

    def healthy(self) -> bool:
        return not self._stopped and time.monotonic() - self._beat < HEALTH_STALE_S + self.request_timeout_s

    def is_ready(self) -> bool:
        return self._assigned and self._reachable and self._broker and not self._stopped

    def set_state(self, *, assigned: Optional[bool] = None, reachable: Optional[bool] = None,
                  broker: Optional[bool] = None, stopped: Optional[bool] = None) -> None:
        self._assigned = self._assigned if assigned is None else assigned
        self._reachable = self._reachable if reachable is None else reachable
        self._broker = self._broker if broker is None else broker
        self._stopped = self._stopped if stopped is None else stopped
        self._up.set(1.0 if self._reachable else 0.0)
