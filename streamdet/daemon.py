"""The online daemon: wires the Kafka and Prometheus adapters around the pure pipeline stages.

One loop: poll -> pipeline.process -> publish dead letters and alerts -> (every commit_interval_ms) producer flush
-> commit. An offset is committed only when every record below it has been scored and every alert and dead letter
derived from those records has been acknowledged by the broker (DESIGN.md §5), so a crash re-reads, never skips.
SIGTERM/SIGINT stop polling, drain the partial windows, publish, flush, commit and exit 0. An unexpected error
commits nothing and exits 1, so that Kafka redelivers after a restart.
"""

from __future__ import annotations

import base64
import gc
import logging
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Callable, Optional

import orjson

from .io.kafka import (Partition, StreamClient, accepts_connections, ensure_changelog,
                       ensure_topics, error_kind, is_outage, make_client)
from .io.metrics import Metrics
from .outage import Backoff

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0  # how often consumer lag and active entities are exported
PROBE_INTERVAL_S = 2.0  # how often the broker is probed when nothing else shows it is alive
PROBE_TIMEOUT_MS = 2000


def dead_letter(raw: bytes, source: tuple, reason: str, detail: str) -> bytes:
    """The DLQ value: reason, detail, where the record came from, and the payload (text, or base64 if not UTF-8)."""
    topic, partition, offset, timestamp_ms = source
    message = {"reason": reason, "detail": detail,
               "source": {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": timestamp_ms}}
    try:
        message["payload"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        message["payload_base64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(message)


class Daemon:
    """`Daemon(cfg).run()` -> exit code. `stop()` (or SIGTERM/SIGINT in the main thread) ends it cleanly."""

    def __init__(self, cfg, bundle_path: Optional[str] = None, *, bootstrap: Optional[str] = None,
                 client_factory: Callable[..., StreamClient] = make_client,
                 observer: Optional[Callable] = None):
        self.cfg = cfg
        self.bundle_path = bundle_path or cfg.model.bundle
        self.bootstrap = bootstrap
        self.client_factory = client_factory
        self.observer = observer  # called with every published StepResult (benchmark latency probes)
        self.metrics = Metrics(cfg.metrics)
        self.pipeline = None
        self.client: Optional[StreamClient] = None
        self._stop = threading.Event()
        self._failed = False
        self._callback_error: Optional[BaseException] = None  # kafka-python swallows listener errors; re-raised
        self._committed: dict[Partition, int] = {}
        self._next_commit = 0.0
        self._next_lag = 0.0
        self._next_probe = 0.0
        self._drain_on_stop = False
        self._pending_at_stop = 0
        self.checkpointer = None  # state.Checkpointer when kafka.state_topic is set
        self.reloader = None  # reload.BundleReloader
        self.backoff = Backoff()

    def stop(self, drain: bool = False) -> None:
        """End the loop. drain=True scores partial windows even when checkpoints could carry them (finite replays)."""
        self._drain_on_stop = self._drain_on_stop or drain
        self._stop.set()

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; BundleError/ConfigError propagate (exit 2 via the CLI), other errors return 1."""
        with ExitStack() as stack:
            self._start(stack)
            try:
                self._loop()
                self._shutdown()
            except Exception as exc:
                self._fail(exc)
                return 1
            finally:
                self.metrics.loop_stopped()
        pending = self._pending_at_stop
        log.info("daemon stopped cleanly", extra={"consumed": self.metrics.total(self.metrics.consumed),
                                                  "scored": self.metrics.total(self.metrics.scored),
                                                  "pending_in_checkpoint": pending,
                                                  "skipped_restored": getattr(self.pipeline, "skipped", 0)})
        return 0

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        cause = exc.__cause__ or exc
        kind = error_kind(cause)
        if kind:
            self.metrics.kafka_errors.labels(kind).inc()
        log.exception("daemon loop failed; committing nothing so that Kafka redelivers")

    def _start(self, stack: ExitStack) -> None:
        from .bundle import load_bundle
        from .pipeline.engine import Pipeline

        bundle_path = self.cfg.path(str(self.bundle_path))
        bundle = load_bundle(bundle_path)
        self.metrics.start_server()  # before compiling: /healthz answers, /readyz says 503 until the model serves
        stack.callback(self.metrics.stop_server)
        self._prepare_model(bundle)
        self.pipeline = Pipeline(self.cfg, bundle, time.monotonic)
        stack.callback(self.pipeline.close)
        self.metrics.set_model(bundle.model_name, bundle.sha256, bundle.window, len(bundle.channels))
        self._install_signals(stack)
        from .reload import BundleReloader

        self.reloader = BundleReloader(bundle_path, bundle, self.metrics,
                                       prepare=lambda new: self._prepare_model(new, heartbeat=False))
        self.reloader.install_sighup(stack)
        self.bootstrap = self._resolve_bootstrap(stack)
        self._connect(stack)
        _freeze_startup_heap()
        k = self.cfg.kafka
        log.info("daemon started bootstrap=%s topic=%s group=%s client=%s model=%s", self.bootstrap, k.metrics_topic,
                 k.group_id, k.client, bundle.model_name)

    def _prepare_model(self, bundle, heartbeat: bool = True) -> None:
        """scoring.compile: aoti compiles an exported bundle for this host (or loads it from the cache) before it
        scores anything; the heartbeat goes on meanwhile so that /healthz stays 200 through a long compile."""
        from .bundle.serving import prepare_all

        s = self.cfg.scoring
        cache = self.cfg.path(s.compile_cache) if s.compile_cache else None
        prepare_all([bundle], s.compile, cache, tick=self.metrics.heartbeat if heartbeat else None)
        self.metrics.set_compile(bundle.serving)

    def _connect(self, stack: ExitStack) -> None:
        """Create topics, the client and the subscription, retrying with capped back-off while the broker is down."""
        k = self.cfg.kafka
        while not self._stop.is_set():
            try:
                if not accepts_connections(self.bootstrap):
                    raise ConnectionError(f"no broker accepts connections at {self.bootstrap}")
                ensure_topics(self.cfg, [k.metrics_topic, k.alerts_topic, k.dlq_topic], self.bootstrap)
                if k.state_topic:
                    ensure_changelog(self.cfg, k.state_topic, self.bootstrap)
                self.client = self.client_factory(self.cfg, self.bootstrap)
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._outage(exc, "start-up")
                self.metrics.heartbeat()  # alive and retrying: /healthz stays 200, /readyz says not ready
                self._stop.wait(self.backoff.next_delay())
        if self.client is None:
            return
        self._recovered()
        stack.callback(self._close_client)
        if k.state_topic:
            from .state import Checkpointer

            self.checkpointer = Checkpointer(self.cfg, self.client, self.bootstrap)
        self.client.subscribe([k.metrics_topic], self._on_assign, self._on_revoke)

    def _outage(self, exc: BaseException, where: str) -> None:
        """Log once per outage (not once per retry), count the error, and turn /readyz false."""
        kind = error_kind(exc) or type(exc).__name__
        self.metrics.kafka_errors.labels(kind).inc()
        if self.backoff.failing is False:
            log.warning("broker unreachable during %s (%s: %s); retrying with back-off", where, kind, exc)
        self.backoff.failed()
        self.metrics.set_connected(False)

    def _recovered(self) -> None:
        if self.backoff.failing:
            log.info("broker reachable again after %d failed attempts", self.backoff.attempts)
        self.backoff.reset()
        self.metrics.set_connected(True)

    def _resolve_bootstrap(self, stack: ExitStack) -> str:
        """An explicit bootstrap wins; "embedded" starts a private broker for the daemon's lifetime."""
        if self.bootstrap or self.cfg.kafka.bootstrap_servers != "embedded":
            return self.bootstrap or self.cfg.kafka.bootstrap_servers
        from .io.broker import EmbeddedBroker

        broker = stack.enter_context(EmbeddedBroker())
        log.info("embedded broker for the daemon bootstrap=%s", broker.bootstrap)
        return broker.bootstrap

    def _install_signals(self, stack: ExitStack) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread; threaded callers use stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, lambda signum, frame: self._on_signal(signum))
            stack.callback(signal.signal, sig, previous)

    def _on_signal(self, signum: int) -> None:
        log.info("signal received signal=%s; draining and stopping", signal.Signals(signum).name)
        self.stop()

    def _close_client(self) -> None:
        try:
            self.client.close()
        except Exception:
            log.exception("error while closing the Kafka client")

    def _shutdown(self) -> None:
        """Nothing consumed is left unacknowledged. With checkpoints the partial windows travel in the state (the
        next run continues exactly); without them (or drain=True) they are scored now."""
        if self.client is None:
            return
        if self.checkpointer is None or self._drain_on_stop:
            self._publish(self.pipeline.drain())
        self._pending_at_stop = len(list(self.pipeline.windows.pending_sources()))  # carried by the checkpoints
        for attempt in range(3):
            if self._commit(force=True):
                return
            self._stop.wait(self.backoff.next_delay())
        log.error("could not commit at shutdown: the uncommitted records will be redelivered")

    # --- the loop -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        k = self.cfg.kafka
        while not self._stop.is_set() and self.client is not None:
            self._maybe_reload()
            try:
                items = self.client.poll(self._poll_timeout_ms(), k.max_poll_records)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._outage(exc, "poll")
                self.metrics.heartbeat()
                self._stop.wait(self.backoff.next_delay())
                continue
            self.metrics.heartbeat()
            if self._callback_error is not None:
                raise RuntimeError("rebalance callback failed") from self._callback_error
            if items:
                self._note_consumed(items)
                result = self.pipeline.process(items)
            else:
                result = self.pipeline.poll()
            self._publish(result)
            self._commit()
            self._export_gauges()
            self._probe(bool(items))

    def _maybe_reload(self) -> None:
        """Swap in a new bundle between batches when the file changed or SIGHUP asked (verified first)."""
        bundle = self.reloader.poll() if self.reloader is not None else None
        if bundle is None:
            return
        self._publish(self.pipeline.flush_batches())  # windows already cut are scored by the model they met
        self.pipeline.replace_model(bundle)
        self.metrics.set_model(bundle.model_name, bundle.sha256, bundle.window, len(bundle.channels))
        self.reloader.served(bundle)
        gc.unfreeze()  # the old model was part of the frozen start-up heap: let the collector free it, then refreeze
        _freeze_startup_heap()

    def _probe(self, got_records: bool) -> None:
        """Records prove the broker alive; otherwise ask it something small every few seconds."""
        now = time.monotonic()
        if got_records and not self.backoff.failing:
            self._next_probe = now + PROBE_INTERVAL_S
            return
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_INTERVAL_S
        try:
            self.client.probe(PROBE_TIMEOUT_MS)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._outage(exc, "probe")
            return
        if self.backoff.failing and self.client.unacknowledged() == 0:
            self._recovered()

    def _poll_timeout_ms(self) -> int:
        """Wait for records at most until the oldest batched window is due, so max_wait_ms holds when input stops."""
        due = self.pipeline.seconds_until_due()
        timeout = self.cfg.kafka.poll_timeout_ms
        return timeout if due is None else max(0, min(timeout, int(due * 1000)))

    def _note_consumed(self, items: list) -> None:
        topics = {topic for topic, _ in self.client.positions()}
        counts = {topics.pop(): len(items)} if len(topics) == 1 else Counter(source[0] for _, source in items)
        for topic, n in counts.items():
            self.metrics.consumed.labels(topic).inc(n)
        self.metrics.last_record.set(time.time())

    def _publish(self, result) -> None:
        """Produce dead letters and alerts (not yet flushed) and record what the step did."""
        k, m = self.cfg.kafka, self.metrics
        for raw, source, reason, detail in result.rejected:
            self.client.produce(k.dlq_topic, None, dead_letter(raw, source, reason, detail))
            m.rejected.labels(reason).inc()
        for event in result.alerts:
            message = event.to_message()
            self.client.produce(k.alerts_topic, message["entity"].encode(), orjson.dumps(message))
            self._record_alert(message)
        self._record_scores(result.scored)
        for size, seconds in result.batches:
            m.batch_size.observe(size)
            m.inference.observe(seconds)
        if self.observer is not None:
            self.observer(result)

    def _record_alert(self, message: dict) -> None:
        firing = message["status"] == "firing"
        channels = [(c["name"], c["share"]) for c in message.get("top_channels", ())]
        self.metrics.alerts.labels(message["status"]).inc()
        self.metrics.entities.alert(message["entity"], firing, channels)
        log.info("alert %s", message["status"], extra={"entity": message["entity"], "score": message["score"],
                                                      "offset": message["source"]["offset"]})

    def _record_scores(self, scored: list) -> None:
        """Count every scored point; export, per entity, only its latest score, threshold and latency."""
        if not scored:
            return
        m, now = self.metrics, time.time()
        m.scored.inc(sum(len(chunk) for chunk in scored))
        newest: dict = {}
        for chunk in scored:
            newest[chunk.entity] = chunk
        for entity, chunk in newest.items():
            m.entities.update(entity, float(chunk.scores[-1]), float(chunk.thresholds[-1]))
            m.latency.observe(now - chunk.sources[-1][3] / 1000.0)

    def _export_gauges(self) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + LAG_INTERVAL_S
        self.metrics.set_lag(self.client.lag())
        self.metrics.entities_active.set(len(self.pipeline.windows))

    # --- delivery -------------------------------------------------------------------------------------------------
    def _commit(self, force: bool = False, partitions: Optional[list[Partition]] = None) -> bool:
        """Checkpoint touched entities, flush the producer (acks), then commit min(first unscored offset, next
        offset) per partition. During an outage nothing is committed and everything stays queued; returns success."""
        now = time.monotonic()
        if not force and now < self._next_commit:
            return True
        self._next_commit = now + self.cfg.kafka.commit_interval_ms / 1000.0
        try:
            if self.checkpointer is not None:
                self._publish(self.pipeline.flush_batches())  # queued windows: scored before their state is saved
                self.checkpointer.write(self.pipeline, sorted(self.pipeline.touched))
                self.pipeline.touched.clear()
            flushed = self.client.flush()
            offsets = self._offsets_to_commit(partitions)
            if offsets:
                self.client.commit(offsets)
                self._committed.update(offsets)
                self.metrics.commits.inc()
                log.debug("committed offsets=%s", offsets)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._outage(exc, "commit")
            self._next_commit = now + self.backoff.next_delay()
            return False
        if self.backoff.failing and (flushed or offsets):  # only a real answer from the broker proves it back
            self._recovered()
        return True

    def _offsets_to_commit(self, partitions: Optional[list[Partition]]) -> dict[Partition, int]:
        floor = self.pipeline.pending_floor()
        consumed = self.client.positions()  # next offset per partition (read, not necessarily scored)
        wanted = partitions if partitions is not None else list(consumed)
        offsets = {}
        for tp in wanted:
            if tp not in consumed:
                continue
            offset = min(floor.get(tp, consumed[tp]), consumed[tp])
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        return offsets

    def _on_assign(self, partitions: list[Partition]) -> None:
        log.info("partitions assigned partitions=%s", ",".join(f"{t}[{p}]" for t, p in partitions))
        if self.checkpointer is not None and partitions:
            try:
                self.checkpointer.restore(self.pipeline, set(partitions))
            except Exception as exc:
                self._failed, self._callback_error = True, exc
                log.exception("restoring state failed")
        self.metrics.set_assigned(bool(partitions))

    def _on_revoke(self, partitions: list[Partition]) -> None:
        """Before losing partitions: score what is pending, publish, flush and commit them (unless failing)."""
        if partitions and not self._failed:
            log.info("partitions revoked partitions=%s", ",".join(f"{t}[{p}]" for t, p in partitions))
            try:
                if self.checkpointer is None:
                    self._publish(self.pipeline.drain())
                self._commit(force=True, partitions=partitions)
                if self.checkpointer is not None:  # their state now lives in the changelog for the next owner
                    self.pipeline.forget(self.pipeline.entities_of(partitions))
            except Exception as exc:
                self._failed, self._callback_error = True, exc
                log.exception("draining revoked partitions failed; committing nothing")
        for tp in partitions:
            self._committed.pop(tp, None)
        self.client.forget(partitions)  # also drops their positions
        self.metrics.set_assigned(False)


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (torch and its modules, the model, clients, config) out of the cyclic
    garbage collector's reach: they live as long as the process, yet every full collection would walk all of them
    (hundreds of thousands of objects, tenths of a second each time, on the thread that consumes). Measured with
    tools/bench_pipeline.py: the largest single gain in end-to-end records/s. Objects created later are collected
    as usual; a model reload unfreezes first, so that the replaced model can be collected."""
    gc.collect()
    gc.freeze()
