"""How to reach the brokers and what counts as their failure: bootstrap, security options, outage classification.

Every io function takes the `kafka` config section; its `bootstrap_servers` must be a real address by then
(`KafkaConfig.at(broker.bootstrap)` for the embedded broker, which serve/ and the CLI start).
"""

from __future__ import annotations

import os
import socket

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from ..config import KafkaConfig
from ..errors import ConfigError
from .client import BrokerUnavailable, KafkaDeliveryError

# How long a kafka-python client (admin, consumer, producer, readers) waits for its first broker answer. Its default,
# 30 s, made each start-up attempt against a broker that accepts connections but does not answer (frozen, overloaded)
# block the daemon for 30 s: /healthz went stale and a SIGTERM waited it out. A healthy broker answers in
# milliseconds, a distant one in a second or two.
BOOTSTRAP_TIMEOUT_MS = 10_000


def error_kind(exc: BaseException) -> str | None:
    """A bounded label for a Kafka failure (for streamdet_kafka_errors_total), or None if it is not one."""
    if isinstance(exc, KafkaDeliveryError):
        return "delivery"
    if isinstance(exc, BrokerUnavailable):
        return exc.kind
    if isinstance(exc, KafkaError):
        return type(exc).__name__
    return None


def is_outage(exc: BaseException) -> bool:
    """Errors that mean "the broker is not answering": retry them; anything else is a bug and stops the daemon."""
    kinds = (KafkaError, KafkaDeliveryError, BrokerUnavailable, ConnectionError, TimeoutError)
    return isinstance(exc, kinds) or isinstance(exc.__cause__, kinds)


def bootstrap_of(kafka: KafkaConfig) -> str:
    """The bootstrap servers; "embedded" must have been replaced by a running broker's address."""
    if kafka.bootstrap_servers == "embedded":
        raise ConfigError("kafka.bootstrap_servers: 'embedded' needs a running EmbeddedBroker (kafka.at(bootstrap))")
    return kafka.bootstrap_servers


def security_options(kafka: KafkaConfig) -> dict:
    """kafka-python security keyword arguments from `kafka.security`; the password comes from the named env var."""
    sec = kafka.security
    opts: dict = {"security_protocol": sec.protocol}
    if sec.protocol.startswith("SASL"):
        if not sec.sasl_mechanism:
            raise ConfigError(f"kafka.security.sasl_mechanism: required with protocol {sec.protocol}")
        opts["sasl_mechanism"] = sec.sasl_mechanism
        opts["sasl_plain_username"] = sec.sasl_username
        if sec.sasl_password_env:
            if sec.sasl_password_env not in os.environ:
                raise ConfigError(f"kafka.security.sasl_password_env: environment variable "
                                  f"{sec.sasl_password_env} is not set")
            opts["sasl_plain_password"] = os.environ[sec.sasl_password_env]
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, key):
            opts[key] = getattr(sec, key)
    return opts


def client_options(kafka: KafkaConfig, role: str = "") -> dict:
    """kafka-python keyword arguments every client of this section shares: servers, client id, security."""
    client_id = f"{kafka.client_id}-{role}" if role else kafka.client_id
    return {"bootstrap_servers": bootstrap_of(kafka), "client_id": client_id,
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, **security_options(kafka)}


def accepts_connections(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when some bootstrap server accepts a TCP connection: a cheap check before building clients, whose
    constructors would otherwise block for tens of seconds retrying an absent broker."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def cluster_reachable(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """True when a client can bootstrap against `bootstrap` and fetch the topic list."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()
