"""The Alertmanager HTTP client against a real loopback HTTP server: credentials from files and environment
variables (never the YAML), and how each answer is classified for the bridge."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamdet.config import load_config
from streamdet.errors import ConfigError
from streamdet.io.alertmanager import AlertmanagerClient
from streamdet.io.broker import free_port


@pytest.fixture
def server():
    """Answers each POST with the next status of `replies` and records the requests' headers and bodies."""
    state = {"replies": [200], "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, dict(self.headers), body))
            code = state["replies"].pop(0) if len(state["replies"]) > 1 else state["replies"][0]
            payload = b'"bad alert"' if code >= 400 else b""
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def client(url: str, *overrides: str, config=None) -> AlertmanagerClient:
    cfg = load_config(config, [f"alertmanager.urls=[{url}]", *overrides])
    return AlertmanagerClient(cfg.alertmanager, resolve=cfg.path)


def test_basic_auth_password_from_a_file_relative_to_the_config(server, tmp_path):
    (tmp_path / "am-password").write_text("s3cret\n")
    config = tmp_path / "streamdet.yaml"
    config.write_text("alertmanager:\n  auth: {username: streamdet, password_file: am-password}\n")
    results = client(server["url"], config=config).post([{"labels": {"alertname": "x"}}])
    assert [r.outcome for r in results] == ["accepted"]
    path, headers, body = server["requests"][0]
    assert path == "/api/v2/alerts" and body == [{"labels": {"alertname": "x"}}]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"streamdet:s3cret").decode()


def test_bearer_token_from_an_environment_variable(server, monkeypatch):
    monkeypatch.setenv("AM_TOKEN", "tok-123")
    client(server["url"], "alertmanager.auth.bearer_token_env=AM_TOKEN").post([])
    assert server["requests"][0][1]["Authorization"] == "Bearer tok-123"


def test_missing_secrets_fail_at_start_up_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="alertmanager.auth.bearer_token_env: environment variable NOT_SET_ANYWHERE"):
        client("http://am:9093", "alertmanager.auth.bearer_token_env=NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match="alertmanager.auth.password_file: cannot read"):
        client("http://am:9093", "alertmanager.auth.username=u", f"alertmanager.auth.password_file={tmp_path}/none")
    with pytest.raises(ConfigError, match="alertmanager.tls: cannot load"):
        client("https://am:9093", f"alertmanager.tls.ca_file={tmp_path}/none.pem")
    with pytest.raises(ConfigError, match="alertmanager.urls: required"):
        AlertmanagerClient(load_config(None, []).alertmanager)


def test_the_yaml_has_no_place_for_a_password():
    with pytest.raises(ConfigError, match="alertmanager.auth.password: unknown key"):
        load_config(None, ["alertmanager.auth.password=hunter2"])


@pytest.mark.parametrize("status, outcome", [(200, "accepted"), (400, "refused"), (422, "refused"),
                                             (401, "unavailable"), (404, "unavailable"), (429, "unavailable"),
                                             (500, "unavailable"), (503, "unavailable")])
def test_answers_are_classified_for_the_bridge(server, status, outcome):
    server["replies"] = [status]
    result = client(server["url"]).post([{"labels": {"alertname": "x"}}])[0]
    assert (result.outcome, result.status) == (outcome, status)
    if status >= 400:
        assert result.body == '"bad alert"'


def test_an_unreachable_alertmanager_is_unavailable_not_an_error():
    result = client(f"http://127.0.0.1:{free_port()}", "alertmanager.timeout_s=1").post([])[0]
    assert result.outcome == "unavailable" and result.status == 0 and "refused" in result.body.lower()


@pytest.fixture
def raw_server():
    """A TCP server answering every request with the bytes in `state["answer"]`, then closing: what a proxy that
    breaks off, or a service that is not Alertmanager, sends."""
    state = {"answer": b""}
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(state["answer"])

    threading.Thread(target=serve, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{listener.getsockname()[1]}"
    yield state
    listener.close()


@pytest.mark.parametrize("answer, outcome, status", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "unavailable", 0),  # not HTTP: http.client.BadStatusLine
    (b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "unavailable", 502),  # bad body
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "accepted", 200),
])
def test_a_broken_or_non_http_answer_is_classified_not_raised(raw_server, answer, outcome, status):
    raw_server["answer"] = answer
    result = client(raw_server["url"], "alertmanager.timeout_s=2").post([{"labels": {"alertname": "x"}}])[0]
    assert (result.outcome, result.status) == (outcome, status)
