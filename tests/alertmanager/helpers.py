"""Real components for the bridge tests: Debian's Alertmanager on a free loopback port, a webhook receiver (a tiny
http.server), the bridge as a `python -m streamdet alertmanager` subprocess, and alert messages as the daemon
writes them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import orjson
import pytest

from streamdet.io.broker import free_port
from streamdet.pipeline.alerts import AlertEvent, alert_id
from tests.conftest import REPO, wait_until

MODEL = {"name": "lstm_ae", "sha256": "0" * 64}


def alertmanager_binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("alertmanager not installed (apt-get install prometheus-alertmanager; CI installs it)")


def http(method: str, url: str, body: Optional[object] = None, timeout: float = 5) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            text = reply.read()
            try:
                return reply.status, json.loads(text)
            except ValueError:
                return reply.status, text.decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, None


class Webhook:
    """An HTTP server on loopback recording every notification Alertmanager sends it."""

    def __init__(self):
        self.notifications: list[dict] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def alerts(self, status: Optional[str] = None) -> list[dict]:
        """Every alert of every notification (optionally only those with this status)."""
        return [a for n in self.notifications for a in n["alerts"] if status is None or a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BodyLimitProxy:
    """A reverse proxy on loopback in front of an Alertmanager that answers 413 to a request body over `limit` bytes,
    as nginx does over its client_max_body_size (1 MB by default); it forwards everything else and relays the
    answer."""

    def __init__(self, upstream: str, limit: int):
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self._relay(None)

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if len(body) > limit:
                    proxy.refused += 1
                    self.send_response(413)
                    self.end_headers()
                    return
                self._relay(body)

            def _relay(self, body):
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=5) as reply:
                        status, text = reply.status, reply.read()
                except urllib.error.HTTPError as exc:
                    status, text = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    """`prometheus-alertmanager` with a route to the webhook: short group waits so that notifications are quick."""

    def __init__(self, tmp: Path, webhook_url: str, port: Optional[int] = None, name: str = "am"):
        self.port = port or free_port()
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "alertmanager.yml"
        self.config.write_text(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook_url}\n"
            "        send_resolved: true\n")
        self.proc: Optional[subprocess.Popen] = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        log = open(self.dir / "alertmanager.log", "ab")
        self.proc = subprocess.Popen(
            [alertmanager_binary(), f"--config.file={self.config}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: http("GET", self.url + "/-/ready")[0] == 200, 30, "Alertmanager to be ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def alerts(self, active_only: bool = True) -> list[dict]:
        """GET /api/v2/alerts (resolved alerts are not listed)."""
        status, body = http("GET", self.url + "/api/v2/alerts" + ("?active=true&silenced=true&inhibited=true"
                                                                  "&unprocessed=true"))
        return body if status == 200 else []

    def open_set(self) -> set[tuple]:
        """The open alerts as comparable label sets."""
        return {tuple(sorted(a["labels"].items())) for a in self.alerts()}

    def silence(self, matchers: dict, minutes: int = 60) -> str:
        from datetime import datetime, timedelta, timezone

        now = datetime.now(timezone.utc)
        body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
                "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
                "createdBy": "tests", "comment": "maintenance"}
        status, reply = http("POST", self.url + "/api/v2/silences", body)
        assert status == 200, reply
        return reply["silenceID"]


class BridgeProcess:
    """`python -m streamdet alertmanager` against the session broker and the given Alertmanager URLs."""

    def __init__(self, bootstrap: str, names: dict, urls: list[str], log_path: Path, group: str = "bridge",
                 extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.log_path = log_path
        overrides = [f"kafka.bootstrap_servers={bootstrap}", f"kafka.alerts_topic={names['alerts']}",
                     "kafka.partitions=2", "kafka.session_timeout_ms=6000", "kafka.heartbeat_interval_ms=1000",
                     f"kafka.client={names.get('client', 'kafka-python')}", f"alertmanager.urls=[{','.join(urls)}]",
                     f"alertmanager.group_id={names['group']}-{group}", f"alertmanager.dlq_topic={names['dlq']}",
                     "alertmanager.resend_interval_s=1", "alertmanager.max_backoff_s=1", "alertmanager.timeout_s=2",
                     f"alertmanager.port={self.port}",
                     "alertmanager.grafana_url=http://grafana/d/sd?var-entity={entity}",
                     "alertmanager.labels={team: sre}", "logging.format=json", *extra]
        cmd = [sys.executable, "-m", "streamdet", "alertmanager", "--config", str(REPO / "config" / "smd.yaml")]
        for item in overrides:
            cmd += ["--set", item]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def readyz(self) -> int:
        return http("GET", f"http://127.0.0.1:{self.port}/readyz")[0]

    def wait_ready(self, timeout_s: float = 30) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return self.readyz() == 200

        wait_until(ready, timeout_s, "the bridge's /readyz to return 200")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def alert_message(entity: str, status: str, start_ts: float, ts: float, score: float = 6.0,
                  threshold: float = 2.0) -> bytes:
    """An alert message exactly as the daemon publishes it."""
    event = AlertEvent(alert_id=alert_id(entity, start_ts, MODEL["sha256"]), status=status, entity=entity,
                       start_ts=start_ts, ts=ts, score=score, threshold=threshold,
                       top_channels=[{"name": "cpu_r", "share": 0.61}, {"name": "load_1", "share": 0.22}],
                       model=MODEL, source=("metrics", 0, 1, 0))
    return orjson.dumps(event.to_message())
