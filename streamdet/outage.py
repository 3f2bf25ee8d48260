"""Broker outages: the capped exponential back-off between retries (which errors are outages: io.kafka)."""

from __future__ import annotations

import random

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 15.0


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
