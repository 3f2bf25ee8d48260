"""Micro-batching of window requests: one model call for many entities, bounded in size and in waiting time.

A batch is due when it holds `max_batch` requests or when its oldest request has waited `max_wait_ms`; the clock is
injectable so tests control time instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

from .windows import WindowRequest


class MicroBatcher:
    """FIFO of window requests with size- and age-based flushing."""

    def __init__(self, max_batch: int, max_wait_ms: float, clock: Callable[[], float] = time.monotonic):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.clock = clock
        self._queue: deque[tuple[float, WindowRequest]] = deque()  # (arrival time, request), oldest first

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[WindowRequest]:
        return (req for _, req in self._queue)

    def add(self, req: WindowRequest) -> None:
        self._queue.append((self.clock(), req))

    def full(self) -> bool:
        return len(self._queue) >= self.max_batch

    def due(self) -> bool:
        """True when a full batch is waiting or the oldest request has waited max_wait_ms."""
        if not self._queue:
            return False
        return self.full() or self.clock() - self._queue[0][0] >= self.max_wait_s

    def oldest_age(self) -> float:
        """Seconds the oldest request has waited (0 when empty); lets a caller size its poll timeout."""
        return self.clock() - self._queue[0][0] if self._queue else 0.0

    def take(self) -> list[WindowRequest]:
        """Remove and return up to max_batch requests, oldest first."""
        n = min(self.max_batch, len(self._queue))
        return [self._queue.popleft()[1] for _ in range(n)]
