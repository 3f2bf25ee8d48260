"""Whether the daemon takes new records: not while the broker does not acknowledge what it produced.

A failed flush (the broker away, the alerts topic gone or leaderless, produce refused) holds fetching: consuming on
would pile up alerts, dead letters and checkpoints in memory without bound while reads still work. The consumer
stays in its group (its partitions are paused, not released), and fetching resumes at the next unread record once a
flush is acknowledged again (BrokerHealth.recovered).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class IntakeGate:
    def __init__(self, client, health, metrics):
        self.client, self.health, self.metrics = client, health, metrics
        self.held = False

    def update(self) -> None:
        """Once per loop turn, before the poll."""
        held = self.health.failing
        if held or self.held:
            self.client.hold_intake(held)  # every turn while held: partitions assigned meanwhile are paused too
        if held == self.held:
            return
        unacknowledged = self.client.unacknowledged()
        if held:
            log.warning("fetching paused: the broker does not acknowledge produced records (%d waiting)",
                        unacknowledged)
        else:
            log.info("fetching resumed: the broker acknowledges produced records again")
        self.metrics.set_intake(held, unacknowledged)
        self.held = held

    def export(self) -> None:
        self.metrics.set_intake(self.held, self.client.unacknowledged())
