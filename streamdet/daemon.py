"""The online daemon: wires the Kafka and Prometheus adapters around the pure pipeline stages.

One loop: poll -> pipeline.process -> publish dead letters and alerts -> (every commit_interval_ms) producer flush
-> commit. An offset is committed only when every record below it has been scored and every alert and dead letter
derived from those records has been acknowledged by the broker (DESIGN.md §5), so a crash re-reads, never skips.
SIGTERM/SIGINT stop polling, drain the partial windows, publish, flush, commit and exit 0. An unexpected error
commits nothing and exits 1, so that Kafka redelivers after a restart.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from contextlib import ExitStack
from typing import Callable, Optional

import orjson

from .io.kafka import KafkaPythonClient, Partition, StreamClient, ensure_topics, error_kind
from .io.metrics import Metrics

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0  # how often consumer lag and active entities are exported


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
                 client_factory: Callable[..., StreamClient] = KafkaPythonClient,
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
        self._consumed: dict[Partition, int] = {}  # next offset per partition (read, not necessarily scored)
        self._committed: dict[Partition, int] = {}
        self._next_commit = 0.0
        self._next_lag = 0.0

    def stop(self) -> None:
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
        log.info("daemon stopped cleanly", extra={"consumed": self.metrics.total(self.metrics.consumed),
                                                  "scored": self.metrics.total(self.metrics.scored)})
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

        bundle = load_bundle(self.cfg.path(str(self.bundle_path)))
        self.pipeline = Pipeline(self.cfg, bundle, time.monotonic)
        self.metrics.set_model(bundle.model_name, bundle.sha256, bundle.window, len(bundle.channels))
        self.metrics.start_server()
        stack.callback(self.metrics.stop_server)
        self.bootstrap = self._resolve_bootstrap(stack)
        k = self.cfg.kafka
        ensure_topics(self.cfg, [k.metrics_topic, k.alerts_topic, k.dlq_topic], self.bootstrap)
        self.client = self.client_factory(self.cfg, self.bootstrap)
        stack.callback(self._close_client)
        self.client.subscribe([k.metrics_topic], self._on_assign, self._on_revoke)
        self._install_signals(stack)
        log.info("daemon started bootstrap=%s topic=%s group=%s model=%s", self.bootstrap, k.metrics_topic,
                 k.group_id, bundle.model_name)

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
        """Score the partial windows, publish, flush and commit: nothing consumed is left unacknowledged."""
        self._publish(self.pipeline.drain())
        self._commit(force=True)

    # --- the loop -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        k = self.cfg.kafka
        while not self._stop.is_set():
            items = self.client.poll(self._poll_timeout_ms(), k.max_poll_records)
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

    def _poll_timeout_ms(self) -> int:
        """Wait for records at most until the oldest batched window is due, so max_wait_ms holds when input stops."""
        due = self.pipeline.seconds_until_due()
        timeout = self.cfg.kafka.poll_timeout_ms
        return timeout if due is None else max(0, min(timeout, int(due * 1000)))

    def _note_consumed(self, items: list) -> None:
        counts: dict[str, int] = {}
        for _, (topic, partition, offset, _ts) in items:
            self._consumed[(topic, partition)] = offset + 1
            counts[topic] = counts.get(topic, 0) + 1
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
        if not scored:
            return
        m, now = self.metrics, time.time()
        m.scored.inc(len(scored))
        newest: dict = {}
        for point in scored:
            newest[point.entity] = point
        for entity, point in newest.items():  # per entity, only the latest score is exported
            m.entities.update(entity, point.score, point.threshold)
            m.latency.observe(now - point.source[3] / 1000.0)

    def _export_gauges(self) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + LAG_INTERVAL_S
        self.metrics.set_lag(self.client.lag())
        self.metrics.entities_active.set(len(self.pipeline.windows))

    # --- delivery -------------------------------------------------------------------------------------------------
    def _commit(self, force: bool = False, partitions: Optional[list[Partition]] = None) -> None:
        """Flush the producer (acks), then commit min(first unscored offset, next offset) per partition."""
        now = time.monotonic()
        if not force and now < self._next_commit:
            return
        self._next_commit = now + self.cfg.kafka.commit_interval_ms / 1000.0
        self.client.flush()
        floor = self.pipeline.pending_floor()
        wanted = partitions if partitions is not None else list(self._consumed)
        offsets = {}
        for tp in wanted:
            if tp not in self._consumed:
                continue
            offset = min(floor.get(tp, self._consumed[tp]), self._consumed[tp])
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            self.client.commit(offsets)
            self._committed.update(offsets)
            self.metrics.commits.inc()
            log.debug("committed offsets=%s", offsets)

    def _on_assign(self, partitions: list[Partition]) -> None:
        log.info("partitions assigned partitions=%s", ",".join(f"{t}[{p}]" for t, p in partitions))
        self.metrics.set_assigned(bool(partitions))

    def _on_revoke(self, partitions: list[Partition]) -> None:
        """Before losing partitions: score what is pending, publish, flush and commit them (unless failing)."""
        if partitions and not self._failed:
            log.info("partitions revoked partitions=%s", ",".join(f"{t}[{p}]" for t, p in partitions))
            try:
                self._publish(self.pipeline.drain())
                self._commit(force=True, partitions=partitions)
            except Exception as exc:
                self._failed, self._callback_error = True, exc
                log.exception("draining revoked partitions failed; committing nothing")
        for tp in partitions:
            self._consumed.pop(tp, None)
            self._committed.pop(tp, None)
        self.client.forget(partitions)
        self.metrics.set_assigned(False)
