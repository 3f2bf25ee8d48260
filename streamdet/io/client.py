"""What the daemon needs from Kafka: the `StreamClient` interface and the errors its implementations raise.

Two implementations, picked by `kafka.client` (io/factory.py): io/kafka_python.py and io/confluent.py. Both consume
with manual commits and produce through the acknowledged io/producer.py Producer, so that serve/ can commit an offset
only after everything derived from the records below it was acknowledged (DESIGN.md §5). Standard library only.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from ..errors import StreamdetError
from ..types import Partition, Source

PartitionsCallback = Callable[[list[Partition]], None]
FLUSH_TIMEOUT_S = 10.0  # the daemon's flush: long enough for a busy broker, short enough to notice an outage


class KafkaDeliveryError(StreamdetError):
    """The broker did not acknowledge produced records; their offsets must not be committed."""


class BrokerUnavailable(StreamdetError):
    """A client other than kafka-python could not reach the brokers (its own exception, converted by its adapter)."""

    def __init__(self, message: str, kind: str = "unavailable"):
        super().__init__(message)
        self.kind = kind  # the client's error name, a bounded label


class StreamClient:
    """One consumer in the group (manual commits) and one acknowledged producer."""

    def subscribe(self, topics: list[str], on_assign: PartitionsCallback, on_revoke: PartitionsCallback) -> None:
        raise NotImplementedError

    def poll(self, timeout_ms: int, max_records: int) -> list[tuple[bytes, Source]]:
        raise NotImplementedError

    def positions(self) -> dict[Partition, int]:
        """Per partition, the offset after the last record poll() has returned (until forget())."""
        raise NotImplementedError

    def produce(self, topic: str, key: Optional[bytes], value: bytes) -> None:
        raise NotImplementedError

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """Wait for every produced record's acknowledgement; raise KafkaDeliveryError if some are missing."""
        raise NotImplementedError

    def commit(self, offsets: dict[Partition, int]) -> None:
        raise NotImplementedError

    def probe(self, timeout_ms: int) -> None:
        """Raise an outage error if the broker does not answer within timeout_ms."""
        raise NotImplementedError

    def unacknowledged(self) -> int:
        """Produced records not acknowledged yet (kept for the next flush)."""
        raise NotImplementedError

    def assignment(self) -> set[Partition]:
        raise NotImplementedError

    def hold_intake(self, hold: bool) -> None:
        """Pause (True) or resume (False) fetching from every assigned partition, in the group all the while; a
        partition assigned while held is paused at the next call. Records already read are not lost: fetching
        resumes at the next record poll() has not returned."""
        raise NotImplementedError

    def lag(self) -> dict[Partition, int]:
        raise NotImplementedError

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop the positions of revoked partitions."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ProducingClient(StreamClient):
    """The producing half both clients share: the acknowledged Producer in `self._producer`."""

    _producer = None  # io.producer.Producer, set by the implementation

    def produce(self, topic, key, value):
        self._producer.produce(topic, key, value)

    def flush(self, timeout_s=FLUSH_TIMEOUT_S):
        return self._producer.flush(timeout_s)

    def unacknowledged(self):
        return self._producer.unacknowledged
