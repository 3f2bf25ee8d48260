"""Prometheus adapter of the daemon: with io/endpoints.py and io/bridge_metrics.py (the Alertmanager bridge's series),
the only modules that import prometheus_client.

`Metrics` owns its own CollectorRegistry (several daemons can live in one process, as in the tests) and serves it
(io/endpoints.py): /metrics, /healthz (200 while the loop keeps beating) and
/readyz (200 only when partitions are assigned and the model is loaded). Per-entity series are produced at scrape
time from the latest state, capped at `metrics.max_entity_series`: beyond the cap only the most anomalous entities
are exported, so label sets stay bounded and stale ones disappear by themselves.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily

from .endpoints import Endpoints

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HEALTH_STALE_S = 30.0  # /healthz fails when the loop has not beaten for this long


class EntitySeries:
    """Latest score/threshold/alert state per entity, exported for at most `cap` entities (most anomalous first)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, float, str]] = {}  # entity -> (score, threshold, bundle sha256[:12])
        self._firing: set[str] = set()
        self._channels: dict[str, list[tuple[str, float]]] = {}  # entity -> top (channel, share) of latest alert

    def update(self, entity: str, score: float, threshold: float, bundle: str = "") -> None:
        self._latest[entity] = (score, threshold, bundle)  # one dict store: safe against a concurrent scrape

    def alert(self, entity: str, firing: bool, top_channels: list[tuple[str, float]]) -> None:
        with self._lock:
            if firing:
                self._firing.add(entity)
                self._channels[entity] = top_channels
            else:
                self._firing.discard(entity)

    def forget(self, entities: Iterable[str]) -> None:
        with self._lock:
            for e in entities:
                self._latest.pop(e, None)
                self._firing.discard(e)
                self._channels.pop(e, None)

    def exported(self) -> list[str]:
        """The entities to export: all of them under the cap, else the top-k by (firing, score / threshold)."""
        entities = list(self._latest)
        if len(entities) <= self.cap:
            return entities
        return heapq.nlargest(self.cap, entities, key=self._anomaly_rank)

    def _anomaly_rank(self, entity: str) -> tuple[int, float]:
        score, threshold, _ = self._latest[entity]
        ratio = score / threshold if threshold > 0 else score
        return (entity in self._firing, ratio)

    def collect(self):
        """prometheus_client custom-collector hook: the capped per-entity gauges, built at scrape time."""
        score = GaugeMetricFamily("streamdet_entity_score", "Latest anomaly score per entity (capped), with the "
                                  "bundle that scored it (sha256, 12 hex digits)", labels=["entity", "bundle"])
        threshold = GaugeMetricFamily("streamdet_entity_threshold", "Current threshold per entity (capped), with "
                                      "the bundle it was calibrated from", labels=["entity", "bundle"])
        anomalous = GaugeMetricFamily("streamdet_entity_anomalous", "1 while an alert is firing for the entity",
                                      labels=["entity"])
        share = GaugeMetricFamily("streamdet_alert_channel_share", "Top channels of the entity's latest alert",
                                  labels=["entity", "channel", "rank"])
        with self._lock:
            for entity in self.exported():
                s, t, bundle = self._latest[entity]
                score.add_metric([entity, bundle], s)
                threshold.add_metric([entity, bundle], t)
                anomalous.add_metric([entity], 1.0 if entity in self._firing else 0.0)
                for rank, (name, value) in enumerate(self._channels.get(entity, ()), start=1):
                    share.add_metric([entity, name, str(rank)], value)
        return [score, threshold, anomalous, share]

    def describe(self):
        return []  # collected lazily; no fixed description at registration


class Metrics(Endpoints):
    """Every series of docs/internals.md, in one registry, plus the HTTP endpoints. Callers state what happened
    (`rejected(reason)`, `scored(n)`, ...); the series, labels and units are this class's business."""

    not_ready_text = b"not ready: waiting for partitions or model\n"
    port_setting = "metrics.port"

    def __init__(self, metrics_cfg):
        super().__init__(metrics_cfg.host, metrics_cfg.port)
        self.cfg = metrics_cfg
        r = self.registry
        self._consumed = Counter("streamdet_records_consumed", "Records read from Kafka", ["topic"], registry=r)
        self._scored = Counter("streamdet_records_scored", "Records that received a score", registry=r)
        self._nonfinite = Counter("streamdet_scores_nonfinite", "Points the model scored NaN or infinite: such a "
                                  "point never fires an alert nor teaches a threshold, so its entity goes unwatched "
                                  "while this grows (the log names the entities)", registry=r)
        self._rejected = Counter("streamdet_records_rejected", "Records sent to the dead-letter topic", ["reason"],
                                 registry=r)
        self._alerts = Counter("streamdet_alerts", "Alert events published", ["status"], registry=r)
        self._entities_active = Gauge("streamdet_entities_active", "Entities with a live window", registry=r)
        self._entities_evicted = Counter("streamdet_entities_evicted", "Entities dropped for idleness at "
                                         "input.max_entities (window, threshold, series and checkpoint)", registry=r)
        self._batch_size = Histogram("streamdet_batch_size", "Windows per scored micro-batch", registry=r,
                                     buckets=BATCH_BUCKETS)
        self._inference = Histogram("streamdet_inference_seconds", "Model time per micro-batch", registry=r,
                                    buckets=INFERENCE_BUCKETS)
        self._latency = Histogram("streamdet_end_to_end_latency_seconds", "Now minus record timestamp at scoring",
                                  registry=r, buckets=LATENCY_BUCKETS)
        self._lag = Gauge("streamdet_consumer_lag", "Records behind the partition end", ["topic", "partition"],
                          registry=r)
        self._last_record = Gauge("streamdet_last_record_timestamp_seconds", "Wall clock of the last consumed record",
                                  registry=r)
        self._commits = Counter("streamdet_commits", "Offset commits", registry=r)
        self._intake_held = Gauge("streamdet_intake_held", "1 while fetching is paused because the broker does not "
                                  "acknowledge what the daemon produces (alerts, dead letters, checkpoints)",
                                  registry=r)
        self._unacknowledged = Gauge("streamdet_unacknowledged_records", "Records produced and not yet acknowledged "
                                     "by the broker (kept for the next flush)", registry=r)
        self._kafka_errors = Counter("streamdet_kafka_errors", "Kafka client errors", ["kind"], registry=r)
        self._ready = Gauge("streamdet_ready", "1 when partitions are assigned and the model is loaded", registry=r)
        self._model_info = Info("streamdet_model", "The loaded model bundle", registry=r)
        self._model_compile = Gauge("streamdet_model_compile_seconds", "Seconds the last AOTInductor compile (or "
                                    "load from its cache) of the served model took", registry=r)
        self._model_compiles = Counter("streamdet_model_compiles", "Model preparations under scoring.compile=aoti: "
                                       "compiled, cache (loaded a cached package) or fallback (uncompiled)",
                                       ["result"], registry=r)
        self._model_reloads = Counter("streamdet_model_reloads", "Bundle reload attempts", ["result"], registry=r)
        self._state_records = Counter("streamdet_state_records", "State changelog records written", ["kind"],
                                      registry=r)
        self._state_bytes = Counter("streamdet_state_bytes", "Bytes (keys and values) written to the state changelog",
                                    registry=r)
        self._state_skipped = Counter("streamdet_state_records_skipped", "Changelog records a restore skipped as "
                                      "corrupt, truncated or out of order (their entities started cold)", registry=r)
        self._bundles = Gauge("streamdet_bundles", "Bundles of a bundle directory: served (distinct, the default "
                              "included) and refused (unloadable, another layout or non-finite scores; their entities "
                              "use the default); of the served, grouped (scored in one call with others of their "
                              "architecture) and ungrouped (they share an architecture but cannot: one call each, "
                              "logged)",
                              ["state"], registry=r)
        self._entities = EntitySeries(metrics_cfg.max_entity_series)
        r.register(self._entities)
        self._lag_labels: set[tuple[str, str]] = set()
        self._beat = time.monotonic()
        self._stopped = False
        self._model_loaded = False
        self._assigned = False
        self._connected = True

    # --- what happened to records ---------------------------------------------------------------------------------
    def consumed(self, counts: dict[str, int]) -> None:
        """Records read from Kafka, per topic, just now."""
        for topic, n in counts.items():
            self._consumed.labels(topic).inc(n)
        self._last_record.set(time.time())

    def rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def scored(self, n: int, nonfinite: int = 0) -> None:
        """n points scored, `nonfinite` of them NaN or infinite."""
        self._scored.inc(n)
        if nonfinite:
            self._nonfinite.inc(nonfinite)

    def entity_scored(self, entity: str, score: float, threshold: float, latency_s: float | None = None,
                      bundle: str = "") -> None:
        """An entity's latest score and threshold (and how long after its record's timestamp it was scored), by the
        bundle with weights sha256 `bundle`."""
        self._entities.update(entity, score, threshold, bundle[:12])
        if latency_s is not None:
            self._latency.observe(latency_s)

    def alert(self, status: str, entity: str, top_channels: list[tuple[str, float]]) -> None:
        """An alert event was published (status firing or resolved) with its top (channel, share) pairs."""
        self._alerts.labels(status).inc()
        self._entities.alert(entity, status == "firing", top_channels)

    def forget_entities(self, entities: Iterable[str]) -> None:
        """Entities this instance no longer serves: their series disappear."""
        self._entities.forget(entities)

    def entities_evicted(self, entities: list[str]) -> None:
        """Entities dropped for idleness at the cap: counted, and their series disappear."""
        self._entities_evicted.inc(len(entities))
        self._entities.forget(entities)

    def batch(self, size: int, seconds: float) -> None:
        """A micro-batch of `size` windows took `seconds` of model time."""
        self._batch_size.observe(size)
        self._inference.observe(seconds)

    def entities_active(self, n: int) -> None:
        self._entities_active.set(n)

    # --- what happened to the service -----------------------------------------------------------------------------
    def committed(self) -> None:
        self._commits.inc()

    def kafka_error(self, kind: str) -> None:
        self._kafka_errors.labels(kind).inc()

    def checkpointed(self, kind: str, nbytes: int) -> None:
        """A state changelog record was produced: kind snapshot, delta or tombstone."""
        self._state_records.labels(kind).inc()
        self._state_bytes.inc(nbytes)

    def changelog_skipped(self, n: int) -> None:
        """A restore skipped `n` bad changelog records."""
        self._state_skipped.inc(n)

    def model_reload(self, result: str) -> None:
        """A bundle reload attempt: "ok" (now serving) or "rejected"."""
        self._model_reloads.labels(result).inc()

    def consumed_total(self) -> int:
        return _total(self._consumed)

    def scored_total(self) -> int:
        return _total(self._scored)

    def nonfinite_total(self) -> int:
        return _total(self._nonfinite)

    def alerts_total(self) -> int:
        return _total(self._alerts)

    # --- state the HTTP endpoints report -------------------------------------------------------------------------
    def heartbeat(self) -> None:
        self._beat = time.monotonic()

    def loop_stopped(self) -> None:
        self._stopped = True
        self._set_ready()

    def healthy(self) -> bool:
        return not self._stopped and time.monotonic() - self._beat < HEALTH_STALE_S

    def is_ready(self) -> bool:
        return self._model_loaded and self._assigned and self._connected and not self._stopped

    def set_model(self, name: str, sha256: str, window: int, n_channels: int) -> None:
        self._model_info.info({"name": name, "sha256": sha256, "window": str(window), "channels": str(n_channels)})
        self._model_loaded = True
        self._set_ready()

    def set_bundles(self, served: int, refused: int, grouped: int = 0, ungrouped: int = 0) -> None:
        for state, count in (("served", served), ("refused", refused), ("grouped", grouped),
                             ("ungrouped", ungrouped)):
            self._bundles.labels(state).set(count)

    def set_compile(self, serving: dict) -> None:
        """Export how the model was prepared (bundle.serving); nothing when scoring.compile is none."""
        result = {"aoti": serving.get("source"), "fallback": "fallback"}.get(serving.get("compile", "none"))
        if result:
            self._model_compiles.labels(result).inc()
            self._model_compile.set(serving.get("seconds", 0.0))

    def set_assigned(self, assigned: bool) -> None:
        self._assigned = assigned
        self._set_ready()

    def set_connected(self, connected: bool) -> None:
        """False while the broker is unreachable (start-up or an outage): /readyz answers 503."""
        self._connected = connected
        self._set_ready()

    def _set_ready(self) -> None:
        self._ready.set(1.0 if self.is_ready() else 0.0)

    def set_intake(self, held: bool, unacknowledged: int) -> None:
        self._intake_held.set(1.0 if held else 0.0)
        self._unacknowledged.set(unacknowledged)

    def set_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Export lag for the current partitions and drop the label sets of partitions no longer assigned."""
        labels = {(t, str(p)): v for (t, p), v in lags.items()}
        for stale in self._lag_labels - set(labels):
            self._lag.remove(*stale)
        for key, value in labels.items():
            self._lag.labels(*key).set(value)
        self._lag_labels = set(labels)


def _total(counter) -> int:
    """Sum of a counter over all its label sets."""
    return int(sum(s.value for metric in counter.collect() for s in metric.samples if s.name.endswith("_total")))
