"""Latency-adaptive scoring: how many new points an entity gathers before its window is scored.

At light load every record is scored at once (stride 1: the record is the last step of its own window, so its
score is out as soon as the model has run). Only when the daemon falls behind does the stride grow, trading
latency for throughput: a window scores `stride` new points for the cost of one model call.

The rule (`AdaptiveStride.observe`, after each poll; an empty poll is observed too):
- pressure = the largest of (records this poll / kafka.max_poll_records), (records still behind the consumer after
  this poll, its `backlog`, / kafka.max_poll_records) and (windows waiting for the model, not counting the batch it
  is scoring, / scoring.max_batch). A full poll or a backlog means records wait in Kafka or in the client's fetch
  queue; a full batch waiting means the model is behind. The daemon's backlog is its client's lag: the partitions'
  high-water marks (cached from the latest fetches, no extra request) minus the offsets polled so far.
- pressure >= GROW_AT: the stride doubles at once (up to the ceiling, scoring.stride, at most the model window),
  so a backlog is met within a few polls; pressure >= JUMP_AT (a full poll, a poll's worth of records behind, a
  full batch waiting) goes to the ceiling at once. Doubling from 1 on a daemon that starts behind (a restart, a
  topic to catch up on) scored its first full polls at strides 2, 4, 8, 16: 33,680 windows instead of 30,000 and
  135-140 model calls instead of 120-124 in a 600,000-record `tools/bench_pipeline.py --saturation` run.
- pressure < RELAX_BELOW for RELAX_S seconds: the stride halves (down to 1), once per RELAX_S, so a short lull in a
  heavy stream does not make it flap. Pressure between the two neither grows nor restarts the calm period (a
  steady moderate load must not hold a stride that a burst raised).
- pressure < RELAX_BELOW for CALM_POLLS polls in a row (`calm`): the load has dropped, so the points already
  waiting for a raised stride are scored now (the caller emits them as partial windows) instead of waiting for
  more points of their entity. Without this a stride of 2, raised by one burst, made a host that sends every 10 s
  wait 10 s for its next record (tools/bench_fleet.py g2). Two polls, not one: under saturation a single short
  poll must not break every entity's stride into partial windows. The backlog keeps a daemon that is catching up
  out of `calm` altogether: its client's fetch queue can run dry before the next fetch arrives, and two such empty
  polls in a row would split every entity's stride (more model calls per record where they cost most). A guard:
  counted in 600,000-record saturation runs before it, such splits were rare (at most 20 partial windows a run).
Each record still gets exactly one score whatever the stride (a window scores the points that arrived since the
entity's previous window); the stride only decides how many share one model call.
"""

from __future__ import annotations

import time
from typing import Callable

GROW_AT = 0.5
JUMP_AT = 1.0
RELAX_BELOW = 0.25
RELAX_S = 1.0
CALM_POLLS = 2


class AdaptiveStride:
    """The current scoring stride, between 1 and `ceiling`; fixed at the ceiling when not `adaptive`."""

    def __init__(self, ceiling: int, max_poll: int, max_batch: int, adaptive: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.ceiling = max(1, int(ceiling))
        self.adaptive = adaptive
        self.stride = 1 if adaptive else self.ceiling
        self._max_poll, self._max_batch = max(1, max_poll), max(1, max_batch)
        self._clock = clock
        self._calm_since: float | None = None
        self._calm_polls = 0

    @property
    def calm(self) -> bool:
        """The last CALM_POLLS polls were calm: points waiting for the stride should be scored now."""
        return self.adaptive and self._calm_polls >= CALM_POLLS

    def observe(self, polled: int, queued_windows: int, backlog: int = 0) -> int:
        """Update from one poll's record count, the windows waiting for the model and the records still behind the
        consumer after this poll (0 where unknown: a replay); returns the stride."""
        if not self.adaptive:
            return self.stride
        pressure = max(max(polled, backlog) / self._max_poll, queued_windows / self._max_batch)
        self._calm_polls = self._calm_polls + 1 if pressure < RELAX_BELOW else 0
        if pressure >= GROW_AT:
            self.stride = self.ceiling if pressure >= JUMP_AT else min(self.ceiling, self.stride * 2)
            self._calm_since = None
        elif pressure < RELAX_BELOW:
            now = self._clock()
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= RELAX_S:
                self.stride = max(1, self.stride // 2)
                self._calm_since = now
        return self.stride
