"""Everything about the deployment that can be checked without Docker or Kubernetes."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from streamdet.config import load_config

from .promql import DASHBOARD, DEPLOY, RULES, dashboard_expressions, recording_rules

REPO = DEPLOY.parent
INTERNALS = (REPO / "docs" / "internals.md").read_text()
EXPORTED = set(re.findall(r"`(streamdet_[a-z_]+)`", INTERNALS))


def metric_names(expr: str) -> set[str]:
    """Exported names an expression reads (histogram series map back to their family)."""
    out = set()
    for name in re.findall(r"\bstreamdet_[a-z_]+", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in EXPORTED:
                name = name[: -len(suffix)]
        out.add(name)
    return out


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus; CI installs it)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_and_rules_use_only_exported_metrics_and_recorded_series():
    recorded = {name for name, _ in recording_rules()}
    exprs = dashboard_expressions() + recording_rules()
    assert len(exprs) >= 20
    for where, expr in exprs:
        unknown = {n for n in metric_names(expr) if n not in EXPORTED and not n.endswith("_info")}
        assert not unknown, f"{where}: {unknown} are not exported (docs/internals.md)"
        for series in re.findall(r"streamdet:[a-z_0-9:]+", expr):
            assert series in recorded, f"{where}: {series} has no recording rule"


def test_dashboard_has_the_entity_variable_and_the_panels_an_sre_needs():
    import json

    board = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in board["templating"]["list"]] == ["entity"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for needed in ("score against threshold", "anomalous", "alerts over time", "top channels", "throughput",
                   "latency", "lag", "rejected", "model"):
        assert needed in titles, needed


def test_compose_services_reference_files_that_exist_and_agree_on_ports():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "train", "streamdet", "replay", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    cfg = load_config(DEPLOY / "streamdet.yaml")
    assert target == f"streamdet:{cfg.metrics.port}" and f"{cfg.metrics.port}:{cfg.metrics.port}" in \
        services["streamdet"]["ports"]
    assert cfg.metrics.host == "0.0.0.0" and cfg.kafka.bootstrap_servers == "kafka:9092"


def test_grafana_provisioning_matches_the_dashboard_and_the_compose_mounts():
    import json

    grafana = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((grafana / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    board = json.loads(DASHBOARD.read_text())
    used = {item["datasource"]["uid"] for item in board["panels"] + board["templating"]["list"]}
    assert used == {source["uid"]} and source["url"] == "http://prometheus:9090"
    folder = yaml.safe_load((grafana / "dashboards" / "streamdet.yml").read_text())["providers"][0]["options"]["path"]
    mounts = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["grafana"]["volumes"]
    assert f"./grafana/streamdet.json:{folder}/streamdet.json:ro" in mounts


def test_compose_creates_the_configured_topics_and_depends_only_on_its_own_services():
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), f"{name} depends on a missing service"
    script = services["topics"]["command"][0]
    created = dict(re.findall(r"--topic (\S+) --partitions (\d+)", script))
    k = load_config(DEPLOY / "streamdet.yaml").kafka
    am = load_config(DEPLOY / "streamdet.yaml").alertmanager
    assert set(created) == {k.metrics_topic, k.alerts_topic, k.dlq_topic, k.state_topic, am.dlq_topic}
    assert int(created[k.metrics_topic]) == k.partitions
    assert "cleanup.policy=compact" in script.split(k.state_topic)[1].splitlines()[0]
    assert "topics" in services["streamdet"]["depends_on"]


def k8s_documents() -> dict[tuple[str, str], dict]:
    """Every manifest of deploy/k8s (and its optional/ folder) by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for f in sorted((DEPLOY / "k8s").rglob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text())}


def test_kubernetes_manifests_reference_each_other():
    docs = k8s_documents()
    deployment, service, configmap, claim = (docs[key] for key in (
        ("Deployment", "streamdet"), ("Service", "streamdet-metrics"), ("ConfigMap", "streamdet-config"),
        ("PersistentVolumeClaim", "streamdet-bundles")))
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == {"app": "streamdet"}
    assert pod["metadata"]["labels"]["app"] == "streamdet"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert volumes["bundles"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    bundle = yaml.safe_load(configmap["data"]["config.yaml"])["model"]["bundle"]
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert bundle.startswith(mounts["bundles"] + "/")
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert container["ports"][0]["containerPort"] == config["metrics"]["port"] == int(
        service["metadata"]["annotations"]["prometheus.io/port"])
    assert deployment["spec"]["replicas"] >= 2 and config["kafka"]["group_id"]


def test_dockerfile_is_multistage_non_root_with_healthcheck_and_pinned_cpu_torch():
    text = (REPO / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2 and "USER streamdet" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "download.pytorch.org/whl/cpu" in text and "STOPSIGNAL SIGTERM" in text
    assert 'ENTRYPOINT ["streamdet"]' in text and '"run", "--config", "/etc/streamdet/config.yaml"' in text
    assert "torch==2.13.0" in (REPO / "requirements.txt").read_text()
    baked = re.search(r"ARG CONFIG=(\S+)", text).group(1)
    assert (REPO / baked).is_file() and "COPY ${CONFIG} /etc/streamdet/config.yaml" in text


def test_the_image_can_compile_and_keeps_compiled_packages_where_a_volume_is_mounted():
    """Issue 21 item 4, statically (no Docker engine here): the runtime stage installs a C++ compiler unless the
    build leaves it out, STREAMDET_CACHE points at a folder the daemon's user owns, and compose and Kubernetes mount
    a volume there."""
    text = (REPO / "Dockerfile").read_text()
    runtime = text[text.index("AS runtime"):]
    compiler = re.search(r"ARG COMPILER=(\S+)", runtime)
    assert compiler and compiler.group(1) in {"g++", "clang"}, "the runtime image needs a C++ compiler by default"
    assert re.search(r"apt-get install [^\n]*\$\{COMPILER\}", runtime)
    cache = re.search(r"STREAMDET_CACHE=(\S+)", runtime).group(1)
    assert re.search(rf"mkdir -p [^\n]*{re.escape(cache)}", runtime) and re.search(rf"chown streamdet [^\n]*{cache}", runtime)
    assert runtime.index("STREAMDET_CACHE") < runtime.index("USER streamdet")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounted = [v.split(":") for v in compose["x-streamdet"]["volumes"]]
    assert [name for name, path, *_ in mounted if path == cache] == ["compile-cache"]
    assert "compile-cache" in compose["volumes"]
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert cache in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_retraining_cronjob_writes_the_bundle_the_daemon_serves_from_the_topic():
    docs = k8s_documents()
    cron, deployment, configmap = (docs[key] for key in (
        ("CronJob", "streamdet-retrain"), ("Deployment", "streamdet"), ("ConfigMap", "streamdet-config")))
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    daemon = deployment["spec"]["template"]["spec"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and job["restartPolicy"] == "Never"
    container = job["containers"][0]
    args = container["args"]
    assert args[:3] == ["train", "--config", "/etc/streamdet/config.yaml"] and "--from-topic" in args
    assert "--out" not in args  # it writes model.bundle, the file the daemon serves and hot-reloads
    volumes = {v["name"]: v for v in job["volumes"]}
    assert volumes == {v["name"]: v for v in daemon["volumes"] if v["name"] in volumes}  # the same claim and map
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    served = {m["name"]: m for m in daemon["containers"][0]["volumeMounts"]}
    assert mounts["bundles"]["mountPath"] == served["bundles"]["mountPath"] and not mounts["bundles"].get("readOnly")
    bundle = yaml.safe_load(configmap["data"]["config.yaml"])["model"]["bundle"]
    assert bundle.startswith(mounts["bundles"]["mountPath"] + "/")
    assert docs[("PersistentVolumeClaim", "streamdet-bundles")]["spec"]["accessModes"] == ["ReadWriteMany"]
