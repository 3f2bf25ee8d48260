"""Delivery: publishing what the pipeline produced, and the one ordered commit (DESIGN.md §5).

An offset is committed only when every record below it has been scored and every alert, dead letter and checkpoint
derived from those records has been acknowledged by the broker. `commit` is that rule, step by step:

    1. score what is queued              pipeline.flush_batches(), published like any step
    2. produce checkpoints               of the entities touched since the last commit (with a state topic)
    3. flush                             wait for the broker's acknowledgement of everything produced so far
    4. commit offsets                    per partition min(first record not yet scored, next record not yet read)

Alerts and dead letters are produced (not flushed) as soon as a step yields them (`publish`). During a broker outage
nothing is committed and everything stays queued in the producer for the next attempt.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Callable, Optional

import orjson

from ..types import Partition, Reject, StepResult
from .backoff import BrokerHealth
from .ledger import Ledger

log = logging.getLogger(__name__)


def dead_letter(reject: Reject) -> bytes:
    """The DLQ value: reason, detail, where the record came from, and the payload (text, or base64 if not UTF-8)."""
    source = reject.source
    message = {"reason": reject.reason, "detail": reject.detail,
               "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset,
                          "timestamp_ms": source.timestamp_ms}}
    try:
        message["payload"] = reject.raw.decode("utf-8")
    except UnicodeDecodeError:
        message["payload_base64"] = base64.b64encode(reject.raw).decode("ascii")
    return orjson.dumps(message)


class Delivery:
    """Owns the producer side of the client and the commit. `checkpointer` is a state.Checkpointer or None."""

    def __init__(self, kafka, client, pipeline, metrics, health: BrokerHealth, checkpointer=None,
                 observer: Optional[Callable[[StepResult], None]] = None):
        self.kafka = kafka
        self.client = client
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health
        self.checkpointer = checkpointer
        self.observer = observer  # called with every published StepResult (benchmark latency probes)
        self.ledger = Ledger()
        self._next_commit = 0.0

    def publish(self, result: StepResult) -> None:
        """Produce dead letters and alerts (not yet flushed) and record what the step did."""
        self.ledger.took(result.held)
        for reject in result.rejected:
            self.client.produce(self.kafka.dlq_topic, None, dead_letter(reject))
            self.metrics.rejected(reject.reason)
        for event in result.alerts:
            message = event.to_message()
            self.client.produce(self.kafka.alerts_topic, message["entity"].encode(), orjson.dumps(message))
            self._record_alert(message)
        self._record_scores(result.scored)
        for size, seconds in result.batches:
            self.metrics.batch(size, seconds)
        if self.observer is not None:
            self.observer(result)

    def _record_alert(self, message: dict) -> None:
        channels = [(c["name"], c["share"]) for c in message.get("top_channels", ())]
        self.metrics.alert(message["status"], message["entity"], channels)
        log.info("alert %s", message["status"], extra={"entity": message["entity"], "score": message["score"],
                                                      "offset": message["source"]["offset"]})

    def _record_scores(self, scored: list) -> None:
        """Count every scored point; export, per entity, only its latest score, threshold and latency."""
        if not scored:
            return
        self.metrics.scored(sum(len(chunk) for chunk in scored))
        newest = {chunk.entity: chunk for chunk in scored}
        now = time.time()
        for entity, chunk in newest.items():
            latency = now - chunk.sources[-1].timestamp_ms / 1000.0
            self.metrics.entity_scored(entity, float(chunk.scores[-1]), float(chunk.thresholds[-1]), latency,
                                       bundle=self.pipeline.model_sha256_of(entity))

    def commit(self, force: bool = False, partitions: Optional[list[Partition]] = None) -> bool:
        """The ordered commit (module docstring), at most every kafka.commit_interval_ms unless forced; `partitions`
        limits step 4 to those (a revocation). Returns False when the broker did not answer (nothing committed)."""
        now = time.monotonic()
        if not force and now < self._next_commit:
            return True
        self._next_commit = now + self.kafka.commit_interval_ms / 1000.0
        try:
            self.publish(self.pipeline.flush_batches())  # 1: queued windows scored before their state is saved
            if self.checkpointer is not None:  # 2
                self.checkpointer.write(self.pipeline, self.ledger, sorted(self.ledger.touched))
                self.ledger.touched.clear()
            flushed = self.client.flush()  # 3
            offsets = self.ledger.offsets_to_commit(self.pipeline.pending_sources(), self.client.positions(),
                                                    partitions)
            if offsets:  # 4
                self.client.commit(offsets)
                self.ledger.committed.update(offsets)
                self.metrics.committed()
                log.debug("committed offsets=%s", offsets)
        except Exception as exc:
            self.health.outage(exc, "commit")  # re-raises anything that is not an outage
            self._next_commit = now + self.health.next_delay()
            return False
        if self.health.failing and (flushed or offsets):  # only a real answer from the broker proves it back
            self.health.recovered()
        return True
