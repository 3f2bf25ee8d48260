"""The Alertmanager wiring of deploy/: compose, Kubernetes, Prometheus' alerting block and the Alertmanager route
agree with each other and with the bridge's config; Alertmanager's own tool accepts and routes the config."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from streamdet.config import load_config

from .promql import DEPLOY
from .test_static import k8s_documents

AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]


def test_compose_runs_the_bridge_against_alertmanager_and_prometheus_alerts_there_too():
    services, cfg = compose(), load_config(DEPLOY / "streamdet.yaml")
    bridge, am = services["alertmanager-bridge"], services["alertmanager"]
    assert bridge["command"] == ["alertmanager", "--config", "/etc/streamdet/config.yaml"]
    assert set(bridge["depends_on"]) == {"topics", "alertmanager"}
    assert f"{cfg.alertmanager.port}:{cfg.alertmanager.port}" in bridge["ports"]
    assert f"{cfg.alertmanager.port}/healthz" in " ".join(bridge["healthcheck"]["test"])
    assert cfg.alertmanager.urls == ("http://alertmanager:9093",) and "9093:9093" in am["ports"]
    assert "./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in am["volumes"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}
    assert jobs["streamdet-alertmanager"] == [f"alertmanager-bridge:{cfg.alertmanager.port}"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    hook = services["alert-webhook"]
    urls = {c["url"] for r in yaml.safe_load(AM_CONFIG.read_text())["receivers"] for c in r.get("webhook_configs", [])}
    assert urls == {"http://alert-webhook:8080/streamdet"} and "8080" in hook["command"][-1]


def test_kubernetes_runs_the_bridge_with_the_shared_config_and_probes():
    docs = k8s_documents()
    bridge = docs[("Deployment", "streamdet-alertmanager")]["spec"]["template"]
    container = bridge["spec"]["containers"][0]
    assert container["args"] == ["alertmanager", "--config", "/etc/streamdet/config.yaml"]
    assert bridge["spec"]["volumes"][0]["configMap"]["name"] == "streamdet-config"
    config = yaml.safe_load(docs[("ConfigMap", "streamdet-config")]["data"]["config.yaml"])["alertmanager"]
    service = docs[("Service", "streamdet-alertmanager-metrics")]
    assert container["ports"][0]["containerPort"] == config["port"] == int(
        service["metadata"]["annotations"]["prometheus.io/port"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    am_service = docs[("Service", "alertmanager")]
    assert config["urls"] == [f"http://{am_service['metadata']['name']}:{am_service['spec']['ports'][0]['port']}"]
    am = docs[("Deployment", "alertmanager")]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in am["volumes"]}["config"]["configMap"]["name"] == "alertmanager-config"


@pytest.fixture
def amtool():
    path = shutil.which("amtool")
    if path is None:
        pytest.skip("amtool not installed (apt-get install prometheus-alertmanager; CI installs it)")
    return path


def test_amtool_accepts_the_config(amtool):
    out = subprocess.run([amtool, "check-config", str(AM_CONFIG)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("labels, receiver", [
    ({"alertname": "StreamdetAnomaly", "severity": "critical", "entity": "machine-1-2"}, "pagerduty-and-webhook"),
    ({"alertname": "StreamdetAnomaly", "severity": "warning", "entity": "machine-1-2"}, "pagerduty-and-webhook"),
    ({"alertname": "StreamdetAnomaly", "severity": "info", "entity": "machine-1-2"}, "webhook"),
    ({"alertname": "StreamdetDown", "severity": "page"}, "pagerduty-and-webhook"),
    ({"alertname": "StreamdetLagGrowing", "severity": "warn"}, "webhook"),
])
def test_the_route_sends_anomalies_to_pagerduty_and_the_webhook(amtool, labels, receiver):
    out = subprocess.run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                          *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == receiver, out.stdout + out.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(AM_CONFIG.read_text())["receivers"]}
    if receiver == "pagerduty-and-webhook":
        assert receivers[receiver]["pagerduty_configs"] and receivers[receiver]["webhook_configs"]
