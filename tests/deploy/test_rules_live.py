"""The alerting rules proven, not only checked: a real Prometheus with deploy/prometheus/rules.yml scrapes a real
daemon, the test drives each condition, and each alert is seen pending, then firing, through Prometheus' API.

The rules run on a faster clock: every `for:` and every range selector is divided by 30 (promql.scaled_rules;
10m -> 20 s), with a 1 s scrape and evaluation interval (a scrape may take up to 1 s on a loaded machine: a timed-out
scrape would blank the instant series for one evaluation and restart every `for:`). Expressions and thresholds are the file's own.
Conditions: an entity over its threshold (the fixture entity's labelled anomaly, tests/fixture_data.py); the
consumer lag growing past 10,000 records (a flood of records faster than a deliberately slow daemon scores them:
micro-batches of one window, stride 1); the dead-letter rate high (one record in eight of the flood is malformed);
the daemon down (killed at the end).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
import yaml

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import TINY_ENTITY, wait_until
from tests.fixture_data import replay_slice, series, split_rows
from tests.integration.helpers import DaemonProcess, record

from .promql import scaled_rules
from .test_prometheus_live import prometheus_binary, query, start_prometheus  # noqa: F401 - a fixture

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus]

CLOCK = 1 / 30  # rules.yml durations on the test's clock
ANOMALY_ROWS = replay_slice(200, lead=170)  # the anomaly and 30 rows after it (the alert stays open: no cooldown)
FLOOD_RATE = 4000  # records/s, well over what the slowed daemon scores (about 1,500/s on the CI machine)
FLOOD_ENTITY = "flood-host"
# confluent (the default client): librdkafka refreshes the partitions' high-water marks whenever it tops up its
# queue, so the exported lag follows the backlog; kafka-python learns them only at its next fetch, which a daemon this
# slow makes once a minute or so (the lag would look flat, then jump).
SLOW_DAEMON = ("kafka.client=confluent", "scoring.stride=1", "scoring.max_batch=1", "scoring.overlap=false",
               "kafka.max_poll_records=1", "alerting.min_consecutive=1", "alerting.cooldown=1000000")
DRIVEN = ("StreamdetEntityAnomalous", "StreamdetLagGrowing", "StreamdetHighRejectionRate")


class AlertStates:
    """Polls Prometheus' /api/v1/alerts in a thread and keeps, per alert name, the states in the order first seen."""

    def __init__(self, port: int):
        self.port = port
        self.seen: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/alerts", timeout=2) as reply:
                    alerts = json.loads(reply.read())["data"]["alerts"]
            except OSError:
                continue
            for alert in alerts:
                states = self.seen.setdefault(alert["labels"]["alertname"], [])
                if alert["state"] not in states:
                    states.append(alert["state"])

    def firing(self, *names: str) -> bool:
        return all("firing" in self.seen.get(name, ()) for name in names)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def diagnosis(port: int, states: AlertStates) -> dict:
    """What Prometheus saw over the last two minutes, for a failure message."""
    exprs = {"lag": "streamdet:consumer_lag:sum", "lag deriv 20s": "deriv(streamdet:consumer_lag:sum[20s])",
             "min up": "min_over_time(up[2m])", "max scrape s": "max_over_time(scrape_duration_seconds[2m])",
             "rejection ratio": "streamdet:rejection_ratio:rate5m",
             "consumed/s": "rate(streamdet_records_consumed_total[10s])"}
    return {"states": states.seen, **{k: [r["value"][1] for r in query(port, e)] for k, e in exprs.items()}}


def flood(bootstrap: str, topic: str, rows, stop: threading.Event) -> None:
    """FLOOD_RATE records/s of a normal entity, one in eight malformed, until `stop`. librdkafka's producer: its cost
    in this process stays small, so the rate holds on a loaded machine while the daemon falls behind."""
    from confluent_kafka import Producer as LibrdkafkaProducer

    producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        for _ in range(200):
            value = b"{not json" if sent % 8 == 7 else record(FLOOD_ENTITY, sent, rows[sent % len(rows)])
            producer.produce(topic, value, FLOOD_ENTITY.encode())
            sent += 1
        producer.poll(0)
        stop.wait(max(0.0, started + sent / FLOOD_RATE - time.monotonic()))
    producer.flush(10)


def test_each_alert_goes_pending_then_firing_against_a_real_daemon(broker, tiny_bundle, names, tmp_path,
                                                                  prometheus_binary):  # noqa: F811
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(scaled_rules(CLOCK)))
    cfg = load_config(None, ["kafka.partitions=2"])
    ensure_topics(cfg.kafka.at(broker.bootstrap), [names["metrics"]])
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log", extra=SLOW_DAEMON)
    prom, prom_port = start_prometheus(prometheus_binary, tmp_path, daemon.port, rules=rules, interval="1s")
    states = AlertStates(prom_port)
    stop_flood = threading.Event()
    try:
        daemon.wait_ready()
        producer = Producer(cfg.kafka.at(broker.bootstrap))
        for i, values in enumerate(split_rows(*ANOMALY_ROWS)):
            producer.produce(names["metrics"], TINY_ENTITY.encode(), record(TINY_ENTITY, ANOMALY_ROWS[0] + i, values))
        producer.flush()
        producer.close()
        wait_until(lambda: daemon.value("streamdet_entity_anomalous", entity=TINY_ENTITY) == 1, 60,
                   f"the daemon to fire for {TINY_ENTITY}")
        normal = series().train[:2000]
        sender = threading.Thread(target=flood, args=(broker.bootstrap, names["metrics"], normal, stop_flood),
                                  daemon=True)
        sender.start()
        if not wait_for(lambda: states.firing(*DRIVEN), 90):
            pytest.fail(f"not all of {DRIVEN} fired within 90 s: {diagnosis(prom_port, states)}")
        stop_flood.set()
        sender.join(30)
        daemon.close()  # killed: Prometheus' scrapes fail
        wait_until(lambda: states.firing("StreamdetDown"), 30, "StreamdetDown firing", interval_s=0.2)
        for name in DRIVEN + ("StreamdetDown",):
            assert states.seen[name][:2] == ["pending", "firing"], (name, states.seen[name])
    finally:
        stop_flood.set()
        states.stop()
        prom.terminate()
        prom.wait(10)
        daemon.close()
