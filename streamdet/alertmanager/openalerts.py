"""The bridge's open alerts: what it re-posts every resend interval, and the labels a resolved event must end.

The bridge is stateless: everything here is re-learned from the alerts topic, by this rule.

    An alert is open when the alerts topic holds its firing event and no resolved event with the same alert_id.

The daemon keys alert messages by entity, so both events of an alert live in one partition. When the bridge is
assigned a partition it reads that partition from its beginning to its current end (outside the consumer group) and
applies every event to this store; then its group consumer continues from the committed offset. Events between the
committed offset and the end are therefore seen twice, which is harmless: applying an event again changes nothing
(a firing event of an alert already resolved does not reopen it; alert ids are never reused, since they hash the
episode's start), and posting it again updates the same Alertmanager alert. The topic's retention must therefore be
longer than the longest anomaly: a firing event deleted by retention is forgotten (Alertmanager then resolves the
alert by itself when its endsAt passes, at most four resend intervals later).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

from .translate import AlertMessage, labels

CLOSED_MEMORY = 100_000  # resolved alert ids remembered (with their labels) so that redelivered events stay closed


@dataclass
class OpenAlert:
    message: AlertMessage  # the firing event
    labels: dict  # its Alertmanager identity
    partition: int


class OpenAlerts:
    """Open alerts by alert_id, and the most recently resolved ones (bounded)."""

    def __init__(self, am_cfg):
        self.am_cfg = am_cfg
        self._open: dict[str, OpenAlert] = {}
        self._closed: OrderedDict[str, tuple[dict, int]] = OrderedDict()  # alert_id -> (labels, partition)

    def __len__(self) -> int:
        return len(self._open)

    def apply(self, message: AlertMessage, partition: int) -> Optional[dict]:
        """Record one event; return the labels to post it with, or None when it must not be posted (a firing event
        of an alert already resolved)."""
        if message.status == "firing":
            if message.alert_id in self._closed:
                return None
            current = self._open.get(message.alert_id)
            if current is None:
                current = self._open[message.alert_id] = OpenAlert(message, labels(message, self.am_cfg), partition)
            return current.labels
        ended = self._open.pop(message.alert_id, None)
        if ended is not None:
            known = ended.labels
        elif message.alert_id in self._closed:
            known = self._closed[message.alert_id][0]
        else:  # its firing event is gone (retention) or was never published: the best identity left
            known = labels(message, self.am_cfg)
        self._closed[message.alert_id] = (known, partition)
        self._closed.move_to_end(message.alert_id)
        while len(self._closed) > CLOSED_MEMORY:
            self._closed.popitem(last=False)
        return known

    def open_alerts(self) -> list[OpenAlert]:
        return list(self._open.values())

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the alerts of partitions this bridge no longer holds (their new owner re-posts them)."""
        gone = set(partitions)
        self._open = {k: v for k, v in self._open.items() if v.partition not in gone}
        self._closed = OrderedDict((k, v) for k, v in self._closed.items() if v[1] not in gone)
