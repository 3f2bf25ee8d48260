"""Broker outages: the capped exponential back-off between retries, and the daemon's view of broker health.

Which errors are outages is io's call (io.connection.is_outage); what to do about them is decided here: log once per
outage, count it, turn /readyz false, wait with back-off, and call the broker back only when it answered for real.
"""

from __future__ import annotations

import logging
import random
import time

from ..io.connection import error_kind, is_outage

log = logging.getLogger(__name__)

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 15.0
PROBE_INTERVAL_S = 2.0  # how often the broker is probed when nothing else shows it is alive
PROBE_TIMEOUT_MS = 2000


class Backoff:
    """0.5 s, 1 s, 2 s ... capped at 15 s, with +-20 % jitter so that a fleet does not retry in lockstep."""

    def __init__(self, initial_s: float = INITIAL_DELAY_S, cap_s: float = MAX_DELAY_S):
        self.initial_s, self.cap_s = initial_s, cap_s
        self.attempts = 0
        self.failing = False

    def failed(self) -> None:
        self.failing = True
        self.attempts += 1

    def next_delay(self) -> float:
        base = min(self.cap_s, self.initial_s * 2 ** max(0, self.attempts - 1))
        return base * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempts = 0
        self.failing = False


class BrokerHealth:
    """Outage bookkeeping shared by the loop, the commit and start-up; `metrics` is io.metrics.Metrics."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.backoff = Backoff()
        self._next_probe = 0.0

    @property
    def failing(self) -> bool:
        return self.backoff.failing

    def next_delay(self) -> float:
        return self.backoff.next_delay()

    def outage(self, exc: BaseException, where: str) -> None:
        """Log once per outage (not once per retry), count the error, and turn /readyz false. Re-raises `exc` when it
        is not an outage (a bug: the daemon stops)."""
        if not is_outage(exc):
            raise exc
        kind = error_kind(exc) or type(exc).__name__
        self.metrics.kafka_error(kind)
        if self.backoff.failing is False:
            log.warning("broker unreachable during %s (%s: %s); retrying with back-off", where, kind, exc)
        self.backoff.failed()
        self.metrics.set_connected(False)

    def recovered(self) -> None:
        if self.backoff.failing:
            log.info("broker reachable again after %d failed attempts", self.backoff.attempts)
        self.backoff.reset()
        self.metrics.set_connected(True)

    def probe(self, client, got_records: bool) -> None:
        """Records prove the broker alive; otherwise ask it something small every few seconds."""
        now = time.monotonic()
        if got_records and not self.backoff.failing:
            self._next_probe = now + PROBE_INTERVAL_S
            return
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_INTERVAL_S
        try:
            client.probe(PROBE_TIMEOUT_MS)
        except Exception as exc:
            self.outage(exc, "probe")
            return
        if self.backoff.failing and client.unacknowledged() == 0:
            self.recovered()
