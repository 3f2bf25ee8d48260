"""The bridge's entry point (`streamdet alertmanager`): wires the concrete Kafka, Prometheus and Alertmanager adapters
into bridge.Bridge, which knows them only through BridgePorts."""

from __future__ import annotations

import dataclasses

from ..io.alertmanager import AlertmanagerClient
from ..io.kafka import accepts_connections, ensure_topics, is_outage, make_client, read_partitions, resolve_bootstrap
from ..io.metrics import BridgeMetrics
from .bridge import Bridge, BridgePorts


def bridge_config(cfg):
    """cfg with the Kafka group and client id of the bridge (its own consumer group on the alerts topic)."""
    kafka = dataclasses.replace(cfg.kafka, group_id=cfg.alertmanager.group_id,
                                client_id=f"{cfg.kafka.client_id}-alertmanager")
    return dataclasses.replace(cfg, kafka=kafka)


def make_bridge(cfg) -> Bridge:
    """A Bridge on the configured broker and Alertmanagers; ConfigError (exit 2) for a bad URL, secret or broker."""
    alertmanager = AlertmanagerClient(cfg.alertmanager, resolve=cfg.path)
    cfg = bridge_config(cfg)
    bootstrap = resolve_bootstrap(cfg)
    k = cfg.kafka

    def connect():
        if not accepts_connections(bootstrap):
            raise ConnectionError(f"no broker accepts connections at {bootstrap}")
        ensure_topics(cfg, [k.alerts_topic, cfg.alertmanager.dlq_topic], bootstrap)
        return make_client(cfg, bootstrap)

    def history(partitions: list[int]):
        return read_partitions(cfg, k.alerts_topic, partitions, bootstrap)

    metrics = BridgeMetrics(cfg.alertmanager.host, cfg.alertmanager.port)
    return Bridge(cfg, BridgePorts(connect=connect, history=history, alertmanager=alertmanager, metrics=metrics,
                                   is_outage=is_outage))


def run_bridge(cfg) -> int:
    return make_bridge(cfg).run()
