"""The online daemon: start-up, the loop and shutdown; it wires the Kafka and Prometheus adapters to the stages.

One loop: poll (held while the broker does not acknowledge writes: intake.py) -> pipeline.process -> delivery.publish
(dead letters, alerts) -> delivery.commit (every kafka.commit_interval_ms: the ordered commit of delivery.py).
SIGTERM/SIGINT stop polling, drain the partial windows (or leave them to the checkpoints), commit and exit 0. An
unexpected error commits nothing and exits 1, so that Kafka redelivers after a restart. A second signal ends the
process at once. About 300 lines: start-up, loop and shutdown share their state (client, pipeline, delivery, health)
and read best in one place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Callable, Optional

from ..io.admin import ensure_topics
from ..io.client import StreamClient
from ..io.connection import accepts_connections, error_kind
from ..io.factory import make_client
from ..io.metrics import Metrics
from .backoff import PROBE_TIMEOUT_MS, BrokerHealth
from .delivery import Delivery
from .heap import GrowthFreezer, freeze_startup_heap, refreeze_after_reload
from .intake import IntakeGate
from .rebalance import Rebalance
from .signals import install_stop_signals

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0  # how often consumer lag and active entities are exported
SHUTDOWN_COMMIT_ATTEMPTS = 3


class Daemon:
    """`Daemon(cfg).run()` -> exit code. `stop()` (or SIGTERM/SIGINT in the main thread) ends it cleanly."""

    def __init__(self, cfg, bundle_path: Optional[str] = None, *, bootstrap: Optional[str] = None,
                 observer: Optional[Callable] = None):
        self.cfg = cfg
        self.kafka = cfg.kafka.at(bootstrap)
        self.bundle_path = bundle_path or cfg.model.bundle
        self.observer = observer  # called with every published StepResult (benchmark latency probes)
        self.metrics = Metrics(cfg.metrics)
        self.health = BrokerHealth(self.metrics)
        self.pipeline = None
        self.client: Optional[StreamClient] = None
        self.delivery: Optional[Delivery] = None
        self.rebalance: Optional[Rebalance] = None
        self.reloader = None  # reload.BundleReloader
        self._stop = threading.Event()
        self._next_lag = 0.0
        self.heap = GrowthFreezer()
        self._drain_on_stop = False
        self._pending_at_stop = 0
        self.intake: Optional[IntakeGate] = None

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
        skipped = self.delivery.ledger.skipped if self.delivery is not None else 0
        log.info("daemon stopped cleanly", extra={"consumed": self.metrics.consumed_total(),
                                                  "scored": self.metrics.scored_total(),
                                                  "alerts": self.metrics.alerts_total(),
                                                  "pending_in_checkpoint": self._pending_at_stop,
                                                  "skipped_restored": skipped})
        return 0

    def _fail(self, exc: BaseException) -> None:
        if self.rebalance is not None:
            self.rebalance.failed = True
        kind = error_kind(exc.__cause__ or exc)
        if kind:
            self.metrics.kafka_error(kind)
        log.exception("daemon loop failed; committing nothing so that Kafka redelivers")

    def _start(self, stack: ExitStack) -> None:
        from ..bundleset import load_bundle_set
        from ..pipeline.engine import Pipeline
        from ..pipeline.settings import PipelineSettings

        bundle_path = self.cfg.path(str(self.bundle_path))
        bundles = load_bundle_set(bundle_path)  # a bundle file, or a directory of per-entity bundles
        bundle = bundles.default
        self.metrics.start_server()  # before compiling: /healthz answers, /readyz says 503 until the model serves
        stack.callback(self.metrics.stop_server)
        self._prepare_model(bundles.scored_alone())  # grouped bundles never run their own (compiled) module
        self.pipeline = Pipeline(PipelineSettings.of(self.cfg), bundles if bundles.root is not None else bundle, time.monotonic)
        stack.callback(self.pipeline.close)
        self._export_model(bundles)
        install_stop_signals(stack, self.stop, "draining and stopping")
        self.reloader = self._reloader(bundle_path, bundles)
        self.reloader.watch.install_sighup(stack)
        self.kafka = self._resolve_bootstrap(stack)
        self._connect(stack)
        freeze_startup_heap()
        k = self.kafka
        log.info("daemon started bootstrap=%s topic=%s group=%s client=%s model=%s", k.bootstrap_servers,
                 k.metrics_topic, k.group_id, k.client, bundle.model_name)

    def _prepare_model(self, bundles: list, heartbeat: bool = True) -> None:
        """scoring.compile: aoti compiles each distinct exported bundle for this host (or loads it from the cache)
        before it scores anything; the heartbeat goes on meanwhile so that /healthz stays 200 through a long
        compile."""
        from ..bundle.serving import prepare_all
        from ..pipeline.engine import inference_threads

        s = self.cfg.scoring
        cache = self.cfg.path(s.compile_cache) if s.compile_cache else None
        prepare_all(list(bundles), s.compile, cache, tick=self.metrics.heartbeat if heartbeat else None,
                    threads=inference_threads(s.threads, s.overlap))
        for bundle in bundles:
            self.metrics.set_compile(bundle.serving)

    def _reloader(self, bundle_path, bundles):
        """Hot reload: the one bundle file, or each file of a bundle directory."""
        if bundles.root is None:
            from .reload import BundleReloader

            return BundleReloader(bundle_path, bundles.default, self.metrics,
                                  prepare=lambda new: self._prepare_model([new], heartbeat=False),
                                  check=lambda new: self.pipeline.check_replacement(new))
        from .reload_dir import BundleDirReloader

        return BundleDirReloader(bundles, self.metrics, prepare=self._prepare_model,
                                 check=lambda new: self.pipeline.check_replacement(new))

    def _export_model(self, served) -> None:
        """Model info (the default bundle) and, for a directory, how many bundles serve and how many were refused."""
        default = getattr(served, "default", served)
        self.metrics.set_model(default.model_name, default.sha256, default.window, len(default.channels))
        if getattr(served, "root", None) is not None:
            router = self.pipeline.router
            self.metrics.set_bundles(len(served.distinct()), len(served.refused), router.grouped_count(),
                                     len(router.ungrouped))

    def _connect(self, stack: ExitStack) -> None:
        """Create topics, the client and the subscription, retrying with capped back-off while the broker is down."""
        k = self.kafka
        while not self._stop.is_set():
            try:
                if not accepts_connections(k.bootstrap_servers):
                    raise ConnectionError(f"no broker accepts connections at {k.bootstrap_servers}")
                ensure_topics(k, [k.metrics_topic, k.alerts_topic, k.dlq_topic])
                if k.state_topic:
                    ensure_topics(k, [k.state_topic], compacted=True)
                self.client = make_client(k)
                break
            except Exception as exc:
                self.health.outage(exc, "start-up")
                self.metrics.heartbeat()  # alive and retrying: /healthz stays 200, /readyz says not ready
                self._stop.wait(self.health.next_delay())
        if self.client is None:
            return
        self.health.recovered()
        stack.callback(self._close_client)
        checkpointer = None
        if k.state_topic:
            from .state import Checkpointer

            checkpointer = Checkpointer(k, self.client, metrics=self.metrics)
        self.delivery = Delivery(k, self.client, self.pipeline, self.metrics, self.health, checkpointer, self.observer)
        self.rebalance = Rebalance(self.delivery, self.metrics, self._stop.is_set)
        self.intake = IntakeGate(self.client, self.health, self.metrics)
        self.client.subscribe([k.metrics_topic], self.rebalance.on_assign, self.rebalance.on_revoke)

    def _resolve_bootstrap(self, stack: ExitStack):
        """The kafka section at a real address: "embedded" starts a private broker for the daemon's lifetime."""
        if self.kafka.bootstrap_servers != "embedded":
            return self.kafka
        from ..io.broker import EmbeddedBroker

        broker = stack.enter_context(EmbeddedBroker())
        log.info("embedded broker for the daemon bootstrap=%s", broker.bootstrap)
        return self.kafka.at(broker.bootstrap)

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
        d = self.delivery
        if d.checkpointer is None or self._drain_on_stop:
            d.publish(self.pipeline.drain())
        for _ in range(SHUTDOWN_COMMIT_ATTEMPTS):
            if not self._broker_answers():
                break
            if d.commit(force=True):
                self._pending_at_stop = sum(1 for _ in self.pipeline.pending_sources())  # carried by checkpoints
                return
        self.rebalance.failed = True  # the close's revocation would only wait out the same outage again
        log.error("could not commit at shutdown: the uncommitted records will be redelivered")

    def _broker_answers(self) -> bool:
        """During an outage a commit attempt waits out a whole flush deadline: ask the broker first, so that a stop
        during an outage ends within seconds (what is not committed is redelivered, nothing is lost)."""
        if not self.health.failing:
            return True
        try:
            self.client.probe(PROBE_TIMEOUT_MS)
        except Exception as exc:
            self.health.outage(exc, "shutdown")  # re-raises anything that is not an outage
            return False
        return True

    # --- the loop -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        k, d = self.kafka, self.delivery
        while not self._stop.is_set() and self.client is not None:
            self._maybe_reload()
            self.intake.update()
            try:
                items = self.client.poll(self._poll_timeout_ms(), k.max_poll_records)
            except Exception as exc:
                self.health.outage(exc, "poll")
                self.metrics.heartbeat()
                self._stop.wait(self.health.next_delay())
                continue
            self.metrics.heartbeat()
            if self.rebalance.error is not None:
                raise RuntimeError("rebalance callback failed") from self.rebalance.error
            if self.rebalance.unrestored:
                items = self.rebalance.leave_unrestored(items, self.client)
            backlog = self._backlog()
            if items:
                self._note_consumed(items)
                d.publish(self.pipeline.process(items, d.ledger.skip_filter(), backlog))
            else:
                d.publish(self.pipeline.poll(backlog))
            d.commit()
            self._once_a_second()
            self.health.probe(self.client, bool(items))

    def _maybe_reload(self) -> None:
        """Swap in a new bundle between batches when the file changed or SIGHUP asked (verified first)."""
        bundle = self.reloader.poll() if self.reloader is not None else None
        if bundle is None:
            return
        self.delivery.publish(self.pipeline.flush_batches())  # windows already cut are scored by the model they met
        self.pipeline.replace_model(bundle)
        self._export_model(bundle)
        self.reloader.served(bundle)
        refreeze_after_reload()

    def _poll_timeout_ms(self) -> int:
        """Wait for records at most until the oldest batched window is due, so max_wait_ms holds when input stops;
        not at all while a checkpoint round is in progress (its next slice is due)."""
        if self.delivery.round is not None:
            return 0
        due = self.pipeline.seconds_until_due()
        timeout = self.kafka.poll_timeout_ms
        return timeout if due is None else max(0, min(timeout, int(due * 1000)))

    def _backlog(self) -> int:
        """Records behind the consumer after this poll (for the adaptive stride, pipeline/pacing.py); the client's
        cached high-water marks, no request. 0 when the stride is fixed or the client cannot tell."""
        if not self.pipeline.pace.adaptive:
            return 0
        try:
            return sum(self.client.lag().values())
        except Exception:  # a lag gauge must never stop the loop; the next poll's size still paces
            log.debug("lag unavailable for pacing", exc_info=True)
            return 0

    def _note_consumed(self, items: list) -> None:
        topics = {tp.topic for tp in self.client.positions()}
        counts = {topics.pop(): len(items)} if len(topics) == 1 else Counter(source.topic for _, source in items)
        self.metrics.consumed(counts)

    def _once_a_second(self) -> None:
        """The lag and entity gauges, and the heap frozen again when the fleet grew (heap.GrowthFreezer)."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + LAG_INTERVAL_S
        self.metrics.set_lag(self.client.lag())
        self.intake.export()
        self.metrics.entities_active(self.pipeline.n_entities)
        self.heap.entities_served(self.pipeline.n_entities)
