"""The acknowledged producer on librdkafka: what `kafka.client: confluent` produces with (alerts, dead letters,
checkpoints).

Why not kafka-python's: at realistic fleet rates the daemon writes one checkpoint delta per record, and kafka-python
builds every batch in Python on the daemon's GIL, a send costing 30-200 us of the loop thread against librdkafka's
3-4 us (tools/bench_fleet.py (g2)). librdkafka batches, sends and retries on its own C threads.

Same contract as io/producer.py's Producer, which the delivery rules (DESIGN.md §5) are built on: `flush` returns
only when every record produced so far is acknowledged (acks=all), else raises KafkaDeliveryError, and no record is
ever dropped: one librdkafka gives up on (its message timeout passed, a broker error) comes back through its delivery
report and is produced again, and one that found librdkafka's queue full waits here, in order, for the next flush.
Retries may reorder records as kafka-python's could (idempotence is not asked for: a broker that restarts without
its state, like the embedded one, makes an idempotent producer fail fatally); consumers dedupe on alert_id and the
changelog orders deltas by key.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from confluent_kafka import KafkaError, Producer

from .client import KafkaDeliveryError

log = logging.getLogger(__name__)

LINGER_MS = 5  # as io/producer.py's kafka-python producer
IN_FLIGHT = 5  # requests per connection, as kafka-python's default (librdkafka's is a million)
QUEUE_FULL_WAIT_S = 0.1  # a flush re-producing held records waits this long for room between tries


class LibrdkafkaProducer:
    """Keyed produce with acks=all through librdkafka; `flush` raises KafkaDeliveryError if a record is not
    acknowledged, and keeps every such record for the next flush."""

    def __init__(self, connection: dict):
        """`connection`: librdkafka's bootstrap, client id and security properties (confluent.connection_options)."""
        self._producer = Producer(dict(connection, **{"acks": "all", "linger.ms": LINGER_MS,
                                                      "max.in.flight.requests.per.connection": IN_FLIGHT}))
        self._in_flight = 0  # handed to librdkafka, no delivery report yet
        self._held: list[tuple[str, Optional[bytes], bytes]] = []  # failed or queue-full records, produced next flush
        self._acknowledged = 0  # since the last successful flush
        self._first_error: Optional[KafkaError] = None

    def produce(self, topic: str, key: Optional[bytes], value: bytes) -> None:
        if self._held:  # records before this one are waiting: it waits behind them
            self._held.append((topic, key, value))
            return
        if not self._send(topic, key, value):
            self._held.append((topic, key, value))
        self._producer.poll(0)  # serve delivery reports as they come, so that their queue stays short

    def _send(self, topic: str, key: Optional[bytes], value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, key, on_delivery=self._delivered)
        except BufferError:  # librdkafka's queue is full (the broker is away): held, in order
            return False
        self._in_flight += 1
        return True

    def _delivered(self, error: Optional[KafkaError], message) -> None:
        self._in_flight -= 1
        if error is None:
            self._acknowledged += 1
            return
        self._first_error = self._first_error or error
        self._held.append((message.topic(), message.key(), message.value()))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every produced record is acknowledged; return how many were since the last successful flush."""
        deadline = time.monotonic() + timeout_s
        outstanding = self._in_flight + len(self._held)
        self._produce_held(deadline)
        self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._produce_held(deadline)  # failed while flushing: on their way again
        if self._held or self._in_flight:
            error, self._first_error = self._first_error, None
            raise KafkaDeliveryError(f"{self.unacknowledged} of {outstanding} records not acknowledged yet "
                                     f"({error.str() if error else 'timed out'}); kept for the next flush")
        acknowledged, self._acknowledged, self._first_error = self._acknowledged, 0, None
        return acknowledged

    def _produce_held(self, deadline: float) -> None:
        held, self._held = self._held, []
        for n, (topic, key, value) in enumerate(held):
            while not self._send(topic, key, value):
                if time.monotonic() >= deadline:
                    self._held = held[n:] + self._held
                    return
                self._producer.poll(QUEUE_FULL_WAIT_S)

    @property
    def unacknowledged(self) -> int:
        return self._in_flight + len(self._held)

    def close(self, timeout_s: float = 5.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self._held:
            log.warning("closing with %d produced records not acknowledged", left + len(self._held))
