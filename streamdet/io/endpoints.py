"""/metrics, /healthz and /readyz over a stdlib ThreadingHTTPServer, for the daemon's and the bridge's metrics."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ConfigError

log = logging.getLogger(__name__)


class Endpoints:
    """/metrics, /healthz and /readyz over a stdlib ThreadingHTTPServer in a daemon thread, for a process that has a
    registry, a health and a readiness (the daemon's Metrics, the Alertmanager bridge's BridgeMetrics)."""

    not_ready_text = b"not ready\n"
    port_setting = "metrics port"  # what an operator changes when the port is taken (a subclass names its key)

    def __init__(self, host: str, port: int):
        self.host, self.requested_port = host, port
        self.registry = CollectorRegistry()
        self._server: Optional[ThreadingHTTPServer] = None

    def healthy(self) -> bool:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def start_server(self) -> int:
        """Serve /metrics, /healthz, /readyz on host:port (0 = a free port); return the bound port. A port already
        taken (another daemon on the host) is a ConfigError: one line and exit 2, not a traceback read as a crash."""
        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"{self.port_setting}: cannot serve /metrics on {self.host}:{self.requested_port} "
                              f"({exc.strerror or exc}); is another process listening there?") from exc
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, name="streamdet-metrics", daemon=True)
        thread.start()
        log.info("metrics server listening host=%s port=%d", self.host, self.port)
        return self.port

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    def stop_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _handler_for(metrics: Endpoints) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._status(metrics.healthy(), b"ok\n", b"loop not running\n")
            elif path == "/readyz":
                self._status(metrics.is_ready(), b"ready\n", metrics.not_ready_text)
            else:
                self._reply(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

        def _status(self, ok: bool, yes: bytes, no: bytes) -> None:
            self._reply(200 if ok else 503, yes if ok else no, "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # scrapes are frequent: keep them out of the INFO log
            log.debug("http %s", fmt % args)

    return Handler
