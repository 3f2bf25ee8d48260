"""Consumer-group rebalances: hand revoked partitions over cleanly, restore the state of assigned ones.

Revoked: score what is pending (or, with checkpoints, let the state carry it), publish, flush and commit those
partitions, then forget their entities: the next owner restores them from the changelog. Their per-entity Prometheus
series go too, with or without checkpoints (a revoked entity's last score, threshold and firing flag would otherwise
stay exported here beside its new owner's, and a rule on `streamdet_entity_anomalous` would keep firing from a stale
copy). Assigned: restore the latest checkpoint of every entity of the new partitions. The Kafka clients swallow or
defer exceptions raised in their callbacks, so an error is kept in `error` and the loop re-raises it after the poll.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from ..types import Partition
from .delivery import Delivery
from .state import RestoreInterrupted

log = logging.getLogger(__name__)

RESTORE_BEAT_S = 0.5  # the heartbeat's period while a restore runs (io/metrics.py's HEALTH_STALE_S is 30 s)


def _names(partitions: list[Partition]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in partitions)


@contextmanager
def _beating(metrics) -> Iterator[None]:
    """Heartbeats while a restore runs inside the poll, where the loop cannot beat: reading a large changelog takes
    longer than /healthz allows silence, and a liveness probe would restart the daemon into the same restore, for
    ever. A read that stops getting records still fails by itself (state.RESTORE_TIMEOUT_S)."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(RESTORE_BEAT_S):
            metrics.heartbeat()

    ticker = threading.Thread(target=beat, name="streamdet-restore-beat", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()


class Rebalance:
    def __init__(self, delivery: Delivery, metrics, stopping: Callable[[], bool] = lambda: False):
        self.delivery = delivery
        self.metrics = metrics
        self.stopping = stopping  # true once the daemon is asked to stop: a restore in progress gives up
        self.failed = False  # set by the loop when it fails: a revocation then commits nothing
        self.error: Optional[BaseException] = None
        self.unrestored: set[Partition] = set()  # assigned, but a stop ended their restore: never to be served

    def on_assign(self, partitions: list[Partition]) -> None:
        log.info("partitions assigned partitions=%s", _names(partitions))
        d = self.delivery
        if d.checkpointer is not None and partitions:
            try:
                with _beating(self.metrics):
                    d.checkpointer.restore(d.pipeline, d.ledger, set(partitions), self.stopping)
            except RestoreInterrupted:
                self.unrestored.update(partitions)
                log.info("restore interrupted by the stop: partitions %s are left to their next owner",
                         _names(partitions))
            except Exception as exc:
                self.failed, self.error = True, exc
                log.exception("restoring state failed")
        self.metrics.set_assigned(bool(partitions))

    def leave_unrestored(self, items: list, client) -> list:
        """A stop ended the restore of some partitions (the loop ends after this turn): their records are neither
        scored without their state nor counted as read, so no offset of theirs is committed; the next owner
        restores them and reads on from the last commit."""
        client.forget(self.unrestored)
        return [item for item in items if (item[1].topic, item[1].partition) not in self.unrestored]

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Before losing partitions: score what is pending, publish, flush and commit them (unless failing)."""
        d = self.delivery
        entities: list[str] = []
        if partitions and not self.failed:
            log.info("partitions revoked partitions=%s", _names(partitions))
            try:
                if d.checkpointer is None:
                    d.publish(d.pipeline.drain())
                d.commit(force=True, partitions=partitions)
                if d.checkpointer is not None:  # their state now lives in the changelog for the next owner
                    entities = d.ledger.entities_of(partitions)
                    d.pipeline.forget(entities)
            except Exception as exc:
                self.failed, self.error = True, exc
                log.exception("draining revoked partitions failed; committing nothing")
        moved = d.ledger.entities_of(partitions)  # their next owner exports their series from now on
        d.ledger.forget(entities, partitions)
        d.client.forget(partitions)  # also drops their positions
        self.metrics.forget_entities(moved)  # no stale score, threshold or firing flag left on this instance
        self.metrics.set_assigned(False)
