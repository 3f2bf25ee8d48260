"""The bridge's entry point (`streamdet alertmanager`): wires the concrete Kafka, Prometheus and Alertmanager adapters
into bridge.Bridge, which knows them only through BridgePorts."""

from __future__ import annotations

import dataclasses

from ..io.alertmanager import AlertmanagerClient
from ..io.admin import ensure_topics
from ..io.connection import accepts_connections, bootstrap_of, is_outage
from ..io.factory import make_client
from ..io.readers import read_partitions
from ..io.bridge_metrics import BridgeMetrics
from .bridge import Bridge, BridgePorts


def bridge_kafka(cfg):
    """The Kafka section with the group and client id of the bridge (its own consumer group on the alerts topic)."""
    return dataclasses.replace(cfg.kafka, group_id=cfg.alertmanager.group_id,
                               client_id=f"{cfg.kafka.client_id}-alertmanager")


def make_bridge(cfg) -> Bridge:
    """A Bridge on the configured broker and Alertmanagers; ConfigError (exit 2) for a bad URL, secret or broker."""
    alertmanager = AlertmanagerClient(cfg.alertmanager, resolve=cfg.path)
    k = bridge_kafka(cfg)
    bootstrap = bootstrap_of(k)

    def connect():
        if not accepts_connections(bootstrap):
            raise ConnectionError(f"no broker accepts connections at {bootstrap}")
        ensure_topics(k, [k.alerts_topic, cfg.alertmanager.dlq_topic])
        return make_client(k)

    def history(partitions: list[int]):
        return read_partitions(k, k.alerts_topic, partitions)

    metrics = BridgeMetrics(cfg.alertmanager.host, cfg.alertmanager.port, cfg.alertmanager.timeout_s)
    ports = BridgePorts(connect=connect, history=history, alertmanager=alertmanager, metrics=metrics,
                        is_outage=is_outage)
    return Bridge(k, cfg.alertmanager, ports)


def run_bridge(cfg) -> int:
    return make_bridge(cfg).run()
