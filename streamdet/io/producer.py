"""The acknowledged producer every streamdet writer uses (alerts, dead letters, checkpoints, replays)."""

from __future__ import annotations

from typing import Optional

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from ..config import KafkaConfig
from .client import KafkaDeliveryError
from .connection import client_options


class Producer:
    """Keyed produce with acks=all. `flush` raises KafkaDeliveryError if a record is not acknowledged, and keeps
    every such record: the next flush sends the failed ones again (at-least-once; consumers dedupe on alert_id)."""

    def __init__(self, kafka: KafkaConfig):
        # no idempotence (kafka-python 3 turns it on with acks=all): after a batch is lost to a broken connection the
        # idempotent producer fails every later batch (OutOfOrderSequenceNumber, then a producer id it cannot renew
        # on a broker that forgot it) and never delivers again; the kept records are sent again as new records
        self._producer = KafkaProducer(acks="all", retries=5, linger_ms=5, enable_idempotence=False,
                                       **client_options(kafka))
        self._pending: list = []  # (topic, key, value, future)

    def produce(self, topic: str, key: Optional[bytes], value: bytes) -> None:
        self._pending.append((topic, key, value, self._producer.send(topic, key=key, value=value)))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every produced record is acknowledged; return how many were."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:  # records not acknowledged in time: found below by their futures, and kept
            pass
        kept, first = [], None
        for topic, key, value, future in pending:
            if not future.is_done:
                kept.append((topic, key, value, future))
            elif future.failed():
                first = first or future.exception
                kept.append((topic, key, value, self._producer.send(topic, key=key, value=value)))
        self._pending = kept + self._pending
        if kept:
            raise KafkaDeliveryError(f"{len(kept)} of {len(pending)} records not acknowledged yet "
                                     f"({first or 'timed out'}); kept for the next flush")
        return len(pending)

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout=timeout_s)
