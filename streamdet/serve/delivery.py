"""Delivery: publishing what the pipeline produced, and the one ordered commit (DESIGN.md §5).

An offset is committed only when every record below it has been scored and every alert, dead letter and checkpoint
derived from those records has been acknowledged by the broker. `commit` is that rule, step by step:

    1. score what is queued              pipeline.flush_batches(), published like any step (forced commits; a
                                         round's slices score the windows of the entities they reach instead)
    2. fix the offsets                   per partition min(first record not yet scored, next record not yet read)
    3. produce checkpoints               of the entities touched since the last commit (with a state topic), a
                                         slice at a time (kafka.checkpoint_slice_ms) between the loop's polls
    4. flush                             wait for the broker's acknowledgement of everything produced so far
    5. commit the offsets of step 2

Steps 1-2 start a checkpoint round, the last slice of step 3 ends it with steps 4-5; meanwhile the loop goes on
consuming and scoring (10,000 new entities' first snapshots took 1-2.5 s on this thread: nothing was scored for that
long). Why this keeps the rule: the offsets of step 2 cover only records read before the round started, and every
entity with such a record is in the round (touched before it started); an entity's state only grows, so its
checkpoint written later in the round holds those records too (and perhaps newer ones, which a restore skips when
they are redelivered, as it always did). No checkpoint holds a point that was cut into a window but not scored:
a slice moves an entity the model still owes a window to the end of the round, once, and has the queued windows
scored (step 1 again) before it writes one still owed (`_write_slice`). A forced commit (revocation, shutdown) finishes
the round in progress and then runs a whole round at once. Alerts and dead letters are produced (not flushed) as
soon as a step yields them (`publish`). During a broker outage nothing is committed and everything stays queued in
the producer for the next attempt; the entities a failed round had not written yet go back to `touched`. While a
flush fails the loop fetches nothing (intake.IntakeGate), and each attempt first flushes what is queued before it
produces a round's checkpoints, so what waits in memory does not grow with the outage.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import orjson

from ..types import Partition, Reject, StepResult
from .backoff import BrokerHealth
from .ledger import Ledger

log = logging.getLogger(__name__)


DLQ_PAYLOAD_BYTES = 65_536  # of a bad record a dead letter carries; the source coordinates point at all of it
DLQ_DETAIL_CHARS = 1_000  # a detail may quote the bad value
NONFINITE_LOG_S = 60.0  # at most one warning a minute about points scored NaN or infinite (the counter has them all)


def dead_letter(reject: Reject) -> bytes:
    """The DLQ value: reason, detail, where the record came from, the payload (text, or base64 if not UTF-8) and its
    size. The payload is cut at DLQ_PAYLOAD_BYTES: a record near the broker's message limit would otherwise make a
    dead letter over it (escaping, base64), which no producer can send, and the daemon would stop on it (and restart
    into it again)."""
    source = reject.source
    detail = reject.detail if len(reject.detail) <= DLQ_DETAIL_CHARS else reject.detail[:DLQ_DETAIL_CHARS] + "..."
    message = {"reason": reject.reason, "detail": detail,
               "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset,
                          "timestamp_ms": source.timestamp_ms},
               "payload_bytes": len(reject.raw), "payload_truncated": len(reject.raw) > DLQ_PAYLOAD_BYTES}
    text = _utf8_text(reject.raw[:DLQ_PAYLOAD_BYTES], message["payload_truncated"])
    if text is not None:
        message["payload"] = text
    else:
        message["payload_base64"] = base64.b64encode(reject.raw[:DLQ_PAYLOAD_BYTES]).decode("ascii")
    return orjson.dumps(message)


def _utf8_text(raw: bytes, cut: bool):
    """`raw` as text, or None if it is not UTF-8; a cut payload may end inside a character, which is dropped."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            return raw[:exc.start].decode("utf-8")
        return None


@dataclass
class CheckpointRound:
    """One commit's checkpoints in progress (module docstring)."""

    entities: list[str]  # touched when the round started, in the order they are written
    offsets: dict[Partition, int]  # fixed when it started (step 2), committed when it ends
    started: float  # wall clock (time.time) at its start
    next: int = 0  # entities[:next] are written (or deferred: appended again to the end)
    deferred: set[str] = field(default_factory=set)  # met while the model owed them a window; moved to the end once

    @property
    def written(self) -> bool:
        return self.next >= len(self.entities)


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
        self._next_nonfinite_log = 0.0
        self.round: Optional[CheckpointRound] = None  # the checkpoint round in progress, if any
        self.slice_s = kafka.checkpoint_slice_ms / 1000.0

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
        self._record_scores(result.scored, result.nonfinite)
        if result.evicted:
            self._forget(result.evicted)
        for size, seconds in result.batches:
            self.metrics.batch(size, seconds)
        if self.observer is not None:
            self.observer(result)

    def _forget(self, entities: list[str]) -> None:
        """Entities the pipeline dropped (idle at input.max_entities): their per-entity series go, and their
        checkpoints are erased, so that neither a scrape nor a restart brings back hosts that are gone."""
        self.metrics.entities_evicted(entities)
        self.ledger.forget(entities, ())
        if self.checkpointer is not None:
            self.checkpointer.erase(entities)
        log.info("dropped %d entities idle at input.max_entities: %s", len(entities),
                 ", ".join(entities[:5]) + (", ..." if len(entities) > 5 else ""))

    def _record_alert(self, message: dict) -> None:
        channels = [(c["name"], c["share"]) for c in message.get("top_channels", ())]
        self.metrics.alert(message["status"], message["entity"], channels)
        log.info("alert %s", message["status"], extra={"entity": message["entity"], "score": message["score"],
                                                      "offset": message["source"]["offset"]})

    def _record_scores(self, scored: list, nonfinite: dict[str, int]) -> None:
        """Count every scored point (and those scored NaN or infinite, logged at most every NONFINITE_LOG_S);
        export, per entity, only its latest score, threshold and latency."""
        if not scored:
            return
        bad = sum(nonfinite.values())
        self.metrics.scored(sum(len(chunk) for chunk in scored), bad)
        if bad and time.monotonic() >= self._next_nonfinite_log:
            self._next_nonfinite_log = time.monotonic() + NONFINITE_LOG_S
            names = sorted(nonfinite)
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            log.warning("the model scored %d points NaN or infinite (no alert can fire for them), entities: %s",
                        bad, shown)
        newest = {chunk.entity: chunk for chunk in scored}
        now = time.time()
        for entity, chunk in newest.items():
            latency = now - chunk.sources[-1].timestamp_ms / 1000.0
            self.metrics.entity_scored(entity, float(chunk.scores[-1]), float(chunk.thresholds[-1]), latency,
                                       bundle=self.pipeline.model_sha256_of(entity))

    def commit(self, force: bool = False, partitions: Optional[list[Partition]] = None) -> bool:
        """The ordered commit (module docstring): a slice of the round in progress, or a new round at most every
        kafka.commit_interval_ms. `force` finishes the round in progress and runs a new one whole; `partitions`
        limits the new round's offsets to those (a revocation). Returns False when the broker did not answer
        (nothing committed)."""
        now = time.monotonic()
        try:
            if self.round is not None:
                self._advance(everything=force)
            if self.round is None and (force or now >= self._next_commit):
                self._next_commit = now + self.kafka.commit_interval_ms / 1000.0
                if self.health.failing and self.client.unacknowledged():
                    self.client.flush()  # what the broker has not taken first: a failing round adds no checkpoints
                    self.health.recovered()  # acknowledged: the loop fetches again (intake.IntakeGate)
                self._start_round(partitions, score_queued=force)
                self._advance(everything=force)
        except Exception as exc:
            self._abandon_round()
            self.health.outage(exc, "commit")  # re-raises anything that is not an outage
            self._next_commit = now + self.health.next_delay()
            return False
        return True

    def _start_round(self, partitions: Optional[list[Partition]], score_queued: bool) -> None:
        """Steps 1-2. Step 1 only for a forced round (its offsets then cover every window already cut): otherwise
        the offsets simply stop before the queued windows' records (pending_sources), and the slices wait for the
        model only before an entity it still owes a window, so a round does not begin with a wait for the model."""
        if score_queued:
            self._score_queued()
        offsets = self.ledger.offsets_to_commit(self.pipeline.pending_sources(), self.client.positions(),
                                                partitions)  # 2
        entities = sorted(self.ledger.touched) if self.checkpointer is not None else []
        self.ledger.touched.clear()
        self.round = CheckpointRound(entities, offsets, time.time())

    def _advance(self, everything: bool) -> None:
        """Step 3 for one slice of the round (all of it when `everything`), then steps 4-5 once it is written."""
        r = self.round
        if everything and not r.written:
            self._score_queued()
            r.next = self.checkpointer.write_slice(self.pipeline, self.ledger, r.entities, r.next, float("inf"))
        elif not r.written:
            self._write_slice(r)
        if not r.written:
            return
        flushed = self.client.flush()  # 4
        if r.offsets:  # 5
            self.client.commit(r.offsets)
            self.ledger.committed.update(r.offsets)
            self.metrics.committed()
            log.debug("committed offsets=%s (checkpoint round of %d entities, %.2f s)", r.offsets,
                      len(r.entities), time.time() - r.started)
        self.round = None
        if self.health.failing and (flushed or r.offsets):  # only a real answer from the broker proves it back
            self.health.recovered()

    def _write_slice(self, r: CheckpointRound) -> None:
        """One slice: kafka.checkpoint_slice_ms of checkpoints, without waiting for the model while it can. An
        entity the model still owes a window (queued or in flight: its state would hold those points as scored) is
        moved to the end of the round, once; met again still owed, the queued windows are scored first (one wait
        for the model), and the slice then writes on for as long as that wait took (at least a slice), so a
        saturated daemon, whose every entity always has a window queued, waits for the model a few times a round
        rather than once per slice (each wait leaves the model idle while the loop writes, and the loop idle while
        the model scores)."""
        busy = self.pipeline.unscored_entities()
        deadline = time.perf_counter() + self.slice_s
        while not r.written and time.perf_counter() < deadline:
            entity = r.entities[r.next]
            if entity in busy:
                if entity not in r.deferred:
                    r.deferred.add(entity)
                    r.entities.append(entity)
                    r.next += 1
                    continue
                waited = self._score_queued()
                busy = frozenset()
                deadline = time.perf_counter() + max(self.slice_s, waited)
            r.next = self.checkpointer.write_slice(self.pipeline, self.ledger, r.entities, r.next, deadline, busy)

    def _score_queued(self) -> float:
        """Score and publish every queued window (no checkpoint holds a window cut but not yet scored); returns
        the seconds it took."""
        started = time.perf_counter()
        self.publish(self.pipeline.flush_batches())
        return time.perf_counter() - started

    def _abandon_round(self) -> None:
        """After a failure: the round's offsets are not committed, its unwritten entities wait for the next round
        (what it produced stays queued in the producer and is flushed with the next round's records)."""
        if self.round is not None:
            self.ledger.touched.update(self.round.entities[self.round.next:])
            self.round = None
