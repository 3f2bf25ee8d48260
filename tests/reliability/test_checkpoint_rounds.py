"""Checkpoints never stop scoring (serve/delivery.py): while a commit's checkpoints are being written, a slice at a
time, the daemon keeps consuming and scoring, and every record is still scored once or carried in a checkpoint.

A burst of many new entities makes a round of first snapshots that takes many slices (checkpoint_slice_ms=1);
records produced after the round started must be scored before the round commits. Written whole on the loop
thread, as before, a round could never see a record produced after it started."""

from __future__ import annotations

import threading
import time

import numpy as np
import orjson

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from streamdet.serve.daemon import Daemon
from streamdet.serve.heap import FREEZE_MIN_NEW
from streamdet.serve.state import Checkpointer
from tests.conftest import SMD_CONFIG, TINY_CHANNELS, tiny_overrides, wait_until

BURST = 3000  # new entities, one record each: their first snapshots make a round of many slices


def _value(entity: str, ts: float, rng: np.random.Generator) -> bytes:
    return orjson.dumps({"entity": entity, "ts": ts, "values": rng.normal(size=TINY_CHANNELS).round(3).tolist()})


def _live(producer: Producer, topic: str, stop: threading.Event) -> int:
    """A few hosts sending about 200 records/s stamped with their production time, until `stop`."""
    rng, sent = np.random.default_rng(1), 0
    while not stop.is_set():
        entity = f"live-{sent % 5}"
        producer.produce(topic, entity.encode(), _value(entity, time.time(), rng))
        sent += 1
        if sent % 20 == 0:
            producer.flush()
            time.sleep(0.1)
    producer.flush()
    return sent


def test_records_are_scored_while_a_checkpoint_round_is_written(broker, names, tiny_bundle, monkeypatch):
    cfg = load_config(SMD_CONFIG, tiny_overrides(tiny_bundle) + [
        f"kafka.metrics_topic={names['metrics']}", f"kafka.alerts_topic={names['alerts']}",
        f"kafka.dlq_topic={names['dlq']}", f"kafka.group_id={names['group']}", f"kafka.state_topic=state-{names['group']}",
        "kafka.checkpoint_slice_ms=1", "kafka.commit_interval_ms=500", "metrics.port=0", "logging.level=WARNING",
        # every live record cuts a window that waits for its batch until a checkpoint round scores the queued
        # windows (the batch is never full, its wait longer than the test), so when a long round reaches the live
        # hosts the model still owes them a score
        "scoring.adaptive=false", "scoring.stride=1", "scoring.max_wait_ms=60000"])
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [kafka.metrics_topic])
    producer = Producer(kafka)
    rng = np.random.default_rng(0)

    during: list[tuple[int, int]] = []  # (id of the round in progress, points produced after it started, now scored)

    def observe(result) -> None:
        r = daemon.delivery.round if daemon.delivery is not None else None
        if r is not None and r.entities:
            newer = sum(int((chunk.ts > r.started).sum()) for chunk in result.scored)
            if newer:
                during.append((id(r), newer))

    # a checkpoint never holds points cut into a window the model has not scored yet (a restore would take them as
    # scored): the slice that reaches such an entity has the queued windows scored first
    written_unscored: list[str] = []
    write_one = Checkpointer._write_one

    def checked_write_one(self, pipeline, ledger, entity, **kwargs):
        if entity in pipeline.unscored_entities():
            written_unscored.append(entity)
        return write_one(self, pipeline, ledger, entity, **kwargs)

    monkeypatch.setattr(Checkpointer, "_write_one", checked_write_one)
    daemon = Daemon(cfg, str(tiny_bundle), bootstrap=broker.bootstrap, observer=observe)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    runner.start()
    stop = threading.Event()
    live: list[int] = []
    sender = threading.Thread(target=lambda: live.append(_live(Producer(kafka), kafka.metrics_topic, stop)),
                              daemon=True)
    sender.start()
    try:
        wait_until(lambda: daemon.metrics.scored_total() > 0, 60, "the live hosts scored")
        for n in range(BURST):  # new hosts while the live ones send: the next rounds hold both
            producer.produce(kafka.metrics_topic, f"burst-{n:05d}".encode(),
                             _value(f"burst-{n:05d}", time.time(), rng))
        producer.flush()
        wait_until(lambda: during, 60, "a record produced after a checkpoint round started, scored during it")
        stop.set()
        sender.join(30)
        wait_until(lambda: daemon.metrics.consumed_total() >= BURST + live[0], 60, "every record consumed")
        # the loop froze the burst's states out of the cyclic collector's walk (heap.GrowthFreezer): once the
        # fleet stops growing, at most FREEZE_MIN_NEW (or a quarter) of its entities are left unfrozen
        wait_until(lambda: daemon.heap.frozen_at > BURST - FREEZE_MIN_NEW, 10,
                   "the heap frozen with the burst's entities")
    finally:
        stop.set()
        daemon.stop()
        runner.join(60)
    assert codes == [0]
    writer = daemon.delivery.checkpointer.writer
    assert writer.snapshots >= BURST  # the burst's first snapshots were all written
    assert not written_unscored, f"checkpointed with a window still waiting for the model: {written_unscored[:5]}"
    # nothing lost while rounds interleave with scoring: every record scored or carried in a checkpoint
    pending = sum(1 for _ in daemon.pipeline.pending_sources())
    assert daemon.metrics.scored_total() + pending == BURST + live[0]
    assert daemon.delivery.round is None and not daemon.delivery.ledger.touched  # the last round was committed
