"""The `alertmanager` section: the bridge from the alerts topic to Alertmanager, and the checks of its URLs, labels
and severity levels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError
from .sections import _range


@dataclass(frozen=True)
class AlertmanagerTLSConfig:
    ca_file: Optional[str] = None  # CA bundle that signed Alertmanager's certificate (default: the system's)
    cert_file: Optional[str] = None  # client certificate (mutual TLS)
    key_file: Optional[str] = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class AlertmanagerAuthConfig:
    """Credentials come from files or environment variables, never from the YAML itself."""
    username: Optional[str] = None  # basic auth (not a secret; its password is)
    password_file: Optional[str] = None
    password_env: Optional[str] = None
    bearer_token_file: Optional[str] = None
    bearer_token_env: Optional[str] = None


@dataclass(frozen=True)
class AlertmanagerConfig:
    """`streamdet alertmanager`: the bridge from the alerts topic to Alertmanager's API v2 (streamdet/alertmanager)."""
    urls: tuple[str, ...] = ()  # every Alertmanager of an HA cluster, e.g. http://alertmanager:9093
    group_id: str = "streamdet-alertmanager"  # the bridge's own consumer group on kafka.alerts_topic
    dlq_topic: str = "alerts-dlq"  # malformed alert messages and alerts Alertmanager refused, with the reason
    timeout_s: float = _range(0.1, 600, default=10.0)
    resend_interval_s: float = _range(0.1, 86_400, default=60.0)  # open alerts are re-posted this often
    max_backoff_s: float = _range(0.1, 3600, default=30.0)  # cap of the retry delay while Alertmanager is down
    labels: dict = field(default_factory=dict)  # added to every alert, e.g. {team: sre, env: prod}
    severity: dict = field(default_factory=lambda: {"critical": 3.0, "warning": 1.5, "info": 0.0})  # min ratio
    grafana_url: str = ""  # generatorURL template, e.g. https://grafana/d/streamdet?var-entity={entity}
    host: str = "127.0.0.1"  # the bridge's /metrics, /healthz, /readyz
    port: int = _range(0, 65535, default=9109)
    tls: AlertmanagerTLSConfig = field(default_factory=AlertmanagerTLSConfig)
    auth: AlertmanagerAuthConfig = field(default_factory=AlertmanagerAuthConfig)

    def __post_init__(self):
        _check_alertmanager(self)


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_alertmanager(am: "AlertmanagerConfig") -> None:
    """Malformed URLs, label names and severity thresholds fail at load time with the key that is wrong."""
    from urllib.parse import urlsplit

    for i, url in enumerate(am.urls):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError as exc:
            raise ConfigError(f"alertmanager.urls[{i}]: malformed URL {url!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"alertmanager.urls[{i}]: malformed URL {url!r} "
                              "(expected http://host:port or https://host:port)")
    for name, value in am.labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"alertmanager.labels.{name}: expected a label name [a-zA-Z_][a-zA-Z0-9_]* "
                              f"with a string value, got {value!r}")
    if not am.severity:
        raise ConfigError("alertmanager.severity: needs at least one level, e.g. {warning: 1.0}")
    for name, value in am.severity.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"alertmanager.severity.{name}: expected a score/threshold ratio >= 0, got {value!r}")

