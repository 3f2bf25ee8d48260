"""The broker away at start-up, or frozen for 30 s mid-run: the daemon waits, says so, and loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from streamdet.io.broker import EmbeddedBroker, free_port
from tests.conftest import wait_until
from tests.integration.helpers import final_totals

from .helpers import (alert_mismatches, kafka_errors, produce, published_alerts, reference_alerts, scenario_records,
                      start_daemon)

pytestmark = pytest.mark.kafka

OUTAGE_S = 30.0


def warnings_about_outage(daemon) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("msg", "").startswith("broker unreachable")]


def test_broker_down_at_start_up_then_up(tiny_bundle, client_names, tmp_path):
    port = free_port()
    daemon = start_daemon(tiny_bundle, f"127.0.0.1:{port}", client_names, tmp_path / "daemon.log")
    broker = None
    try:
        wait_until(lambda: kafka_errors(daemon) >= 3, 30, "three failed connection attempts")
        assert daemon.proc.poll() is None, "the daemon must not exit while the broker is away"
        assert daemon.get("/readyz")[0] == 503 and daemon.get("/healthz")[0] == 200
        assert len(warnings_about_outage(daemon)) == 1, "one log line per state change, not one per retry"
        broker = EmbeddedBroker(port=port).start()
        daemon.wait_ready(60)
        records = scenario_records()[:300]
        produce(broker.bootstrap, client_names["metrics"], records)
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=client_names["metrics"]) >= 300, 30,
                   "every record consumed")
        assert any(e.get("msg", "").startswith("broker reachable again") for e in daemon.log_events())
    finally:
        daemon.close()
        if broker is not None:
            broker.stop()


def test_broker_frozen_for_30_s_mid_run_loses_nothing(tiny_bundle, client_names, tmp_path):
    records = scenario_records()
    want = reference_alerts(tiny_bundle, records)
    half = len(records) // 2
    with EmbeddedBroker() as broker:
        daemon = start_daemon(tiny_bundle, broker.bootstrap, client_names, tmp_path / "daemon.log")
        try:
            daemon.wait_ready()
            produce(broker.bootstrap, client_names["metrics"], records[:half])
            wait_until(lambda: daemon.value("streamdet_records_scored_total") >= half - 30, 30, "the first half")
            os.kill(broker.pid, signal.SIGSTOP)  # a network partition: the broker keeps its memory
            frozen_at = time.monotonic()
            try:
                wait_until(lambda: daemon.get("/readyz")[0] == 503, 20, "/readyz to turn false")
                wait_until(lambda: time.monotonic() - frozen_at >= OUTAGE_S and daemon.proc.poll() is None,
                           OUTAGE_S + 5, "the outage to last 30 s with the daemon alive")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            daemon.wait_ready(60)
            sender = threading.Thread(target=produce, args=(broker.bootstrap, client_names["metrics"], records[half:]))
            sender.start()
            sender.join(60)
            wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=client_names["metrics"])
                       >= len(records), 60, "every record consumed after the outage")  # not only the alerts' ones
            messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 60)
            assert not alert_mismatches(want, messages), alert_mismatches(want, messages)
            code, _ = daemon.terminate(20)
            totals = final_totals(daemon)
            assert code == 0 and totals["scored"] + totals["pending_in_checkpoint"] >= len(records)
            assert len(warnings_about_outage(daemon)) <= 2  # probe and commit may each notice it first
        finally:
            daemon.close()


def test_broker_hung_at_start_up_leaves_the_daemon_live_and_stoppable(tiny_bundle, names, tmp_path):
    """A broker that accepts connections but answers nothing (frozen, overloaded): each start-up attempt gives up
    after io.connection.BOOTSTRAP_TIMEOUT_MS (10 s; kafka-python's own 30 s kept /healthz silent for as long), so
    attempts repeat, /healthz stays 200 and SIGTERM ends the daemon within one attempt."""
    with EmbeddedBroker() as broker:
        os.kill(broker.pid, signal.SIGSTOP)
        daemon = start_daemon(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log")
        try:
            wait_until(lambda: daemon.get("/healthz")[0] == 200, 30, "the daemon's /healthz")
            health: list[int] = []

            def attempts() -> float:
                health.append(daemon.get("/healthz")[0])
                return kafka_errors(daemon)

            wait_until(lambda: attempts() >= 2, 35, "two failed start-up attempts")
            assert set(health) == {200} and daemon.get("/readyz")[0] == 503
            code, seconds = daemon.terminate(20)
            assert code == 0 and seconds < 15, (code, seconds)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
            daemon.close()
