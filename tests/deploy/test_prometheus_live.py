"""A real Prometheus scrapes a real daemon: every dashboard and recording-rule expression returns data.

Embedded broker, `streamdet run` in a subprocess (tiny bundle), Debian's prometheus binary with deploy's rules file
and a 1 s scrape interval, a replay of machine-1-2's labelled anomaly with malformed records mixed in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from streamdet.config import load_config
from streamdet.io.broker import free_port
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import TINY_ENTITY, wait_until
from tests.fixture_data import replay_slice, split_rows
from tests.integration.helpers import DaemonProcess, record

from .promql import RULES, dashboard_expressions, recording_rules

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus]

FIRST_ROW, LAST_ROW = replay_slice(460, lead=170)  # the fixture entity's labelled anomaly starts 170 rows in
RATE = 200.0  # rows/s: the replay lasts a few seconds, so rates are non-zero while Prometheus scrapes


@pytest.fixture
def prometheus_binary():
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus not installed (apt-get install prometheus; CI installs it)")
    return path


def start_prometheus(binary: str, tmp_path, target_port: int, rules=RULES, interval: str = "1s"):
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
        f"rule_files: ['{rules}']\n"
        "scrape_configs:\n"
        f"  - job_name: streamdet\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=open(tmp_path / "prom.log", "wb"),
                            stderr=subprocess.STDOUT)
    return proc, port


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.loads(reply.read())
    except OSError:
        return []
    assert body["status"] == "success", body
    return body["data"]["result"]


def rules(port: int) -> list:
    """Every recording and alerting rule with its evaluation health ('ok' once evaluated without error)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as reply:
        groups = json.loads(reply.read())["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def replay(bootstrap: str, topic: str, rows) -> None:
    cfg = load_config(None, ["kafka.partitions=2"])
    producer = Producer(cfg.kafka.at(bootstrap))
    started = time.monotonic()
    for i, values in enumerate(rows):
        if i % 50 == 10:
            producer.produce(topic, b"bad", b"not json at all")
        producer.produce(topic, TINY_ENTITY.encode(), record(TINY_ENTITY, FIRST_ROW + i, values))
        delay = started + i / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    producer.flush()
    producer.close()


def test_every_dashboard_and_recording_rule_expression_returns_data(broker, tiny_bundle, names, tmp_path,
                                                                  prometheus_binary):
    ensure_topics(load_config(None, ["kafka.partitions=2"]).kafka.at(broker.bootstrap), [names["metrics"]])
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log",
                           extra=("alerting.min_consecutive=1",))
    prom, prom_port = start_prometheus(prometheus_binary, tmp_path, daemon.port)
    try:
        daemon.wait_ready()
        rows = split_rows(FIRST_ROW, LAST_ROW)
        sender = threading.Thread(target=replay, args=(broker.bootstrap, names["metrics"], rows), daemon=True)
        sender.start()
        wait_until(lambda: daemon.value("streamdet_alerts_total", status="firing") >= 1, 60, "a first alert")
        expressions = dashboard_expressions() + recording_rules()
        missing = dict(expressions)

        def all_answered():
            for where, expr in list(missing.items()):
                if query(prom_port, expr):
                    del missing[where]
            return not missing

        wait_until(all_answered, 60, "data for every expression", interval_s=1.0)
        sender.join(30)
        status, text = daemon.get("/metrics")
        assert status == 200
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        scored = query(prom_port, "streamdet:records_scored:rate1m")
        assert float(scored[0]["value"][1]) > 0
        unhealthy = [(r["name"], r.get("lastError")) for r in rules(prom_port) if r["health"] != "ok"]
        assert not unhealthy, unhealthy
    finally:
        prom.terminate()
        prom.wait(10)
        daemon.close()
