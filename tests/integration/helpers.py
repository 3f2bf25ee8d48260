"""Helpers for the end-to-end tests: the daemon as a real subprocess, HTTP scrapes, an independent Kafka reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from streamdet.io.broker import free_port
from streamdet.replay import encode_record
from tests.conftest import REPO, SMD_CONFIG, tiny_overrides, wait_until

T0 = 1_700_000_000.0  # payload timestamp of row 0; row i is sent with ts = T0 + i (so alerts map back to rows)


def record(entity: str, row: int, values: np.ndarray) -> bytes:
    return encode_record(entity, T0 + row, values)


PORT_RETRIES = 3  # fresh ports tried when another process took the chosen one before the daemon could bind it


class DaemonProcess:
    """`python -m streamdet run` against the session broker, with JSON logs in a file and a metrics port."""

    def __init__(self, bundle: Path, bootstrap: str, names: dict, log_path: Path, extra: tuple[str, ...] = (),
                 env: Optional[dict] = None):
        self.log_path = log_path
        self._overrides = tiny_overrides(bundle) + [
            f"kafka.bootstrap_servers={bootstrap}", f"kafka.metrics_topic={names['metrics']}",
            f"kafka.alerts_topic={names['alerts']}", f"kafka.dlq_topic={names['dlq']}",
            f"kafka.group_id={names['group']}", "kafka.partitions=2", "kafka.session_timeout_ms=6000",
            "kafka.heartbeat_interval_ms=1000", "kafka.commit_interval_ms=200", "metrics.host=127.0.0.1",
            "scoring.threads=1", "logging.format=json", f"kafka.client={names.get('client', 'kafka-python')}", *extra]
        self._env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
        self._log = open(log_path, "wb")
        self._respawns = 0
        self._spawn()

    def _spawn(self) -> None:
        """Start the daemon on a port that was free a moment ago; wait_ready starts it again on another if a
        process of a parallel test took that port in between (the daemon then exits with 'Address already in use')."""
        self.port = free_port()
        cmd = [sys.executable, "-m", "streamdet", "run", "--config", str(SMD_CONFIG)]
        for item in [*self._overrides, f"metrics.port={self.port}"]:
            cmd += ["--set", item]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self._env, stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout_s: float = 45) -> None:
        def ready():
            if self.proc.poll() is not None and self._port_was_taken() and self._respawns < PORT_RETRIES:
                self._respawns += 1
                self._spawn()
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return self.get("/readyz")[0] == 200

        wait_until(ready, timeout_s, "the daemon's /readyz to return 200")

    def _port_was_taken(self) -> bool:
        return self.proc.returncode == 2 and f":{self.port} (Address already in use)" in self.log_text()[-2000:]

    def samples(self) -> dict[tuple[str, tuple], float]:
        """Every sample of a /metrics scrape: (name, sorted label items) -> value."""
        status, text = self.get("/metrics")
        if status != 200:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def terminate(self, timeout_s: float = 10) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        return code, time.monotonic() - started

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                events.append(orjson.loads(line))
        return events

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def read_topic(bootstrap: str, topic: str, done: Callable[[list[dict]], bool], timeout_s: float,
               decode: Callable[[bytes], dict] = orjson.loads) -> list[dict]:
    """Read `topic` from the beginning with confluent-kafka (a client independent of the daemon's) until `done`."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    messages: list[dict] = []
    try:
        def collect() -> bool:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                messages.append(decode(msg.value()) | {"_key": msg.key(), "_partition": msg.partition()})
            return done(messages)

        wait_until(collect, timeout_s, f"messages on {topic}", interval_s=0)
    finally:
        consumer.close()
    return messages


def final_totals(daemon: DaemonProcess) -> Optional[dict]:
    """The consumed/scored totals of the daemon's 'stopped cleanly' log line."""
    for event in daemon.log_events():
        if event.get("msg") == "daemon stopped cleanly":
            return event
    return None
