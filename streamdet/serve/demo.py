"""`streamdet demo`: the whole system once, end to end, on one machine, ending by itself.

Train a bundle if there is none, start the embedded broker, run the daemon, replay the test splits into the metrics
topic, print every alert read back from the alerts topic, and summarise: records scored, alerts, and how many
labelled anomaly segments were alerted. Without the shared benchmark data it uses the synthetic generator.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from ..config import Config
from ..data.series import label_segments

log = logging.getLogger(__name__)

SEGMENT_SLACK = 10  # an alert starting this many points after a labelled segment still counts as detecting it
DRAIN_TIMEOUT_S = 120.0


def with_data_fallback(cfg: Config) -> Config:
    """Use the synthetic generator when the configured benchmark folder is missing (a user's fresh clone)."""
    from ..data import data_available

    if data_available(cfg):
        return cfg
    bundle = Path(cfg.model.bundle)
    data = dataclasses.replace(cfg.data, dataset="synthetic", entities=())
    model = dataclasses.replace(cfg.model, bundle=str(bundle.with_name(bundle.stem + "-synthetic" + bundle.suffix)))
    fallback = dataclasses.replace(cfg, data=data, model=model)
    print(f"no benchmark data at {cfg.path(cfg.data.root) / cfg.data.dataset}: using the synthetic generator "
          f"and the bundle {fallback.path(model.bundle)} (see README, 'Getting the data')")
    return fallback


def segments_alerted(segments: list[tuple[int, int]], spans: list[tuple[int, int | None]]) -> int:
    """How many segments an alert covers: open (firing row .. resolve row; None = still open) at one of the segment's
    rows, or firing within SEGMENT_SLACK points after its end. Open rows are what evaluate's event recall counts, so
    an alert that fired just before a segment and was still open through it detected it."""
    hit = 0
    for start, end in segments:
        hit += any(fired <= end + SEGMENT_SLACK and (resolved is None or resolved > start)
                   for fired, resolved in spans)
    return hit


def _ensure_bundle(cfg: Config) -> None:
    path = cfg.path(cfg.model.bundle)
    if path.exists():
        print(f"using bundle {path}")
        return
    from ..train import train_bundle

    print(f"training {cfg.model.name} ({cfg.model.preset or 'default'} preset) on {cfg.data.dataset}, "
          f"{', '.join(cfg.data.entities) or 'all entities'} -> {path}")
    train_bundle(cfg, progress=True)


def _quiet_logs() -> None:
    """The demo prints alerts itself; keep the daemon's and kafka-python's INFO chatter out of the way."""
    if logging.getLogger().level <= logging.INFO:
        logging.getLogger("streamdet").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)


def _print_alert(message: dict, rows: str) -> None:
    """One line per alert event; a resolved event shows the episode's rows and its peak score."""
    channels = message.get("top_channels", [])
    shown = channels[:1] + [c for c in channels[1:] if c["share"] >= 0.01]  # "0%" entries say nothing
    top = ", ".join(f"{c['name']} {c['share']:.0%}" for c in shown)
    when = time.strftime("%H:%M:%S", time.localtime(message["ts"]))
    label = "peak" if message["status"] == "resolved" else "score"
    print(f"  {message['status']:8s} {message['entity']:14s} {when} rows {rows:>13s}  {label} {message['score']:9.3f}  "
          f"threshold {message['threshold']:8.3f}  top: {top}")


def _rows(message: dict, report) -> str:
    """Dataset rows of the alert: where it fired, and for a resolved one also where it resolved (the replay fills
    the report as it sends, and an alert exists only after its record was sent)."""
    start = report.row_of(message["entity"], message["start_ts"])
    if message["status"] != "resolved":
        return str(start)
    return f"{start}-{report.row_of(message['entity'], message['ts'])}"


def run_demo(cfg: Config, limit: int = 0) -> int:
    from ..data import load_series
    from ..io.admin import ensure_topics
    from ..io.broker import EmbeddedBroker
    from ..io.producer import Producer
    from ..replay import ReplayReport, replay
    from .daemon import Daemon

    cfg = with_data_fallback(cfg)
    _quiet_logs()
    _ensure_bundle(cfg)
    series = load_series(cfg)
    arrays = {s.entity: (s.test[:limit] if limit else s.test) for s in series}
    total = sum(len(a) for a in arrays.values())
    with EmbeddedBroker() as broker:
        k = cfg.kafka.at(broker.bootstrap)
        ensure_topics(k, [k.metrics_topic, k.alerts_topic, k.dlq_topic])
        daemon = Daemon(cfg, bootstrap=broker.bootstrap)
        runner = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        runner.start()
        _wait(lambda: daemon.metrics.is_ready() or not runner.is_alive(), 60, "the daemon to become ready")
        print(f"daemon ready; Prometheus metrics at http://{cfg.metrics.host}:{daemon.metrics.port}/metrics")
        print(f"replaying {total} records of {len(arrays)} entities into '{k.metrics_topic}' ...")
        producer = Producer(k)
        live = ReplayReport(entities=list(arrays), timestamps={e: [] for e in arrays})  # filled while sending
        report_box: dict = {"entities": list(arrays), "report": live}
        sender = threading.Thread(target=lambda: replay(
            arrays, lambda key, v: producer.produce(k.metrics_topic, key, v), report=live), daemon=True)
        sender.start()
        alerts = _tail_alerts(cfg, k, daemon, runner, sender, report_box, total)
        producer.flush()
        producer.close()
    _summary(series, report_box["report"], alerts, daemon, limit)
    return 0


def _tail_alerts(cfg, kafka, daemon, runner, sender, report_box, total) -> list[dict]:
    """Print alerts as they arrive; once the replay is scored, stop the daemon (it drains the last partial windows)
    and print the alerts its shutdown published."""
    from ..io.readers import TopicTail

    alerts: list[dict] = []
    # points still waiting in partial strides are scored only by the shutdown drain
    in_partial_strides = len(report_box.get("entities", ())) * (cfg.scoring.stride - 1)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S + total / 500.0
    with TopicTail(kafka, kafka.alerts_topic) as tail:
        while time.monotonic() < deadline and runner.is_alive():
            _print_new(tail, alerts, report_box)
            scored = daemon.metrics.scored_total()
            if not sender.is_alive() and scored >= total - in_partial_strides:
                break
        daemon.stop(drain=True)  # the replay is over: score the last partial windows too
        runner.join(timeout=30)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.5:
            if _print_new(tail, alerts, report_box):
                quiet_since = time.monotonic()
    return alerts


def _print_new(tail, alerts: list[dict], report_box: dict) -> int:
    new = [orjson.loads(raw) for raw in tail.poll(timeout_ms=200)]
    report = report_box.get("report")
    for message in new:
        alerts.append(message)
        _print_alert(message, _rows(message, report))
    return len(new)


def _summary(series, report, alerts: list[dict], daemon, limit: int) -> None:
    scored = daemon.metrics.scored_total()
    firing = [a for a in alerts if a["status"] == "firing"]
    n_segments = hit = 0
    for s in series:
        labels = s.test_labels[:limit] if limit else s.test_labels
        segments = label_segments(labels)
        n_segments += len(segments)
        hit += segments_alerted(segments, _alert_spans(alerts, s.entity, report))
    print()
    print("summary")
    print(f"  records replayed         {report.records}")
    print(f"  records scored           {scored}")
    print(f"  alerts                   {len(firing)} firing, {len(alerts) - len(firing)} resolved")
    print(f"  labelled segments        {n_segments}")
    print(f"  segments alerted         {hit} (an alert open during the segment or firing <= {SEGMENT_SLACK} "
          "points after it)")


def _alert_spans(alerts: list[dict], entity: str, report) -> list[tuple[int, int | None]]:
    """(firing row, resolve row or None while open) of each of the entity's alerts, keyed by their start_ts."""
    spans: dict[int, int | None] = {}
    for a in alerts:
        if a["entity"] != entity:
            continue
        fired = report.row_of(entity, a["start_ts"])
        if a["status"] == "resolved":
            spans[fired] = report.row_of(entity, a["ts"])
        else:
            spans.setdefault(fired, None)
    return list(spans.items())


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
