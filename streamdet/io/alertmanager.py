"""Alertmanager adapter: posts alerts to Alertmanager's API v2 (`POST /api/v2/alerts`) over HTTP(S).

The standard library's urllib is enough here: one JSON POST per batch and one GET to probe, with TLS (CA, client
certificate) from `ssl` and basic or bearer authentication as one header. A third-party HTTP library would add a
dependency for no behaviour the bridge needs (no connection pool matters at one post per resend interval).

Every answer is classified for the bridge's delivery rule (streamdet/alertmanager/bridge.py):
- `accepted` (2xx): the bridge may commit;
- `refused` (400, 413, 422: the payload itself is wrong): the alerts go to the dead-letter topic with the answer;
- `unavailable` (connection errors, timeouts, answers that are not HTTP, 5xx, and 401/403/404/405/408/429, which mean
  a configuration or a capacity problem that posting the same alert again later can get through): retried with
  capped back-off.
Credentials are read from files or environment variables when the client is built, never from the YAML.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError

log = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
STATUS_PATH = "/api/v2/status"
REFUSED_CODES = frozenset({400, 413, 422})  # the alert is wrong: sending it again will not help
BODY_LIMIT = 2000  # characters of an error answer kept for the log and the dead letter


@dataclass(frozen=True)
class PostResult:
    url: str
    outcome: str  # "accepted" | "refused" | "unavailable"
    status: int  # HTTP status, 0 when no answer came
    body: str  # the answer (truncated), or the connection error

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


def _secret(path: Optional[str], env: Optional[str], key: str, resolve: Callable[[str], Path]) -> Optional[str]:
    """A secret from a file (stripped) or an environment variable; ConfigError naming the key when it is missing."""
    if path:
        try:
            return resolve(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"alertmanager.auth.{key}_file: cannot read {path} ({exc.strerror})") from None
    if env:
        if env not in os.environ:
            raise ConfigError(f"alertmanager.auth.{key}_env: environment variable {env} is not set")
        return os.environ[env]
    return None


def auth_header(auth, resolve: Callable[[str], Path] = Path) -> Optional[str]:
    """The Authorization header value from `alertmanager.auth` (bearer token or basic auth), or None."""
    token = _secret(auth.bearer_token_file, auth.bearer_token_env, "bearer_token", resolve)
    password = _secret(auth.password_file, auth.password_env, "password", resolve)
    if token and auth.username:
        raise ConfigError("alertmanager.auth: set either a bearer token or a username/password, not both")
    if token:
        return f"Bearer {token}"
    if auth.username:
        pair = f"{auth.username}:{password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    if password:
        raise ConfigError("alertmanager.auth.username: required with a password")
    return None


def ssl_context(tls, resolve: Callable[[str], Path] = Path) -> ssl.SSLContext:
    """The client TLS context from `alertmanager.tls` (files resolved against the config's directory)."""
    try:
        context = ssl.create_default_context(cafile=str(resolve(tls.ca_file)) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(str(resolve(tls.cert_file)), str(resolve(tls.key_file)) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"alertmanager.tls: cannot load the certificate files ({exc})") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _text(response) -> str:
    """The start of an answer's body; what arrived of it when the connection breaks off or the framing is wrong
    (the status line decided the outcome already)."""
    try:
        return response.read(BODY_LIMIT).decode(errors="replace").strip()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"(body unreadable: {type(exc).__name__})"


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "accepted"
    return "refused" if status in REFUSED_CODES else "unavailable"


class AlertmanagerClient:
    """Posts to every configured Alertmanager (an HA cluster does not share alerts between its members)."""

    def __init__(self, am_cfg, resolve: Callable[[str], Path] = Path):
        if not am_cfg.urls:
            raise ConfigError("alertmanager.urls: required, e.g. [http://alertmanager:9093]")
        self.urls = tuple(url.rstrip("/") for url in am_cfg.urls)
        self.timeout_s = am_cfg.timeout_s
        self._headers = {"Content-Type": "application/json", "User-Agent": "streamdet-alertmanager"}
        authorization = auth_header(am_cfg.auth, resolve)
        if authorization:
            self._headers["Authorization"] = authorization
        https = any(url.startswith("https:") for url in self.urls)
        self._context = ssl_context(am_cfg.tls, resolve) if https else None
        self._pool = ThreadPoolExecutor(len(self.urls), "alertmanager-post") if len(self.urls) > 1 else None

    def post(self, alerts: list[dict]) -> list[PostResult]:
        """POST the alerts to each Alertmanager; one result per URL."""
        return self._each(ALERTS_PATH, json.dumps(alerts).encode())

    def probe(self) -> list[PostResult]:
        """GET /api/v2/status of each Alertmanager: `accepted` when it answers as an Alertmanager."""
        return self._each(STATUS_PATH, None)

    def _each(self, path: str, body: Optional[bytes]) -> list[PostResult]:
        """One request to every Alertmanager at once, as Prometheus does: a member that never answers costs one
        timeout_s per post, not one per member in turn (which also kept the bridge's loop from beating /healthz)."""
        if self._pool is None:
            return [self._request(url, path, body) for url in self.urls]
        return list(self._pool.map(lambda url: self._request(url, path, body), self.urls))

    def _request(self, url: str, path: str, body: Optional[bytes]) -> PostResult:
        request = urllib.request.Request(url + path, data=body, headers=self._headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._context) as reply:
                return PostResult(url, "accepted", reply.status, _text(reply))
        except urllib.error.HTTPError as exc:
            return PostResult(url, classify(exc.code), exc.code, _text(exc))
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, DNS, timeout, TLS, not HTTP
            reason = getattr(exc, "reason", exc)
            return PostResult(url, "unavailable", 0, f"{type(exc).__name__}: {reason}")
