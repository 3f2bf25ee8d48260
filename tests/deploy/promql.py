"""The PromQL a deployment depends on: every expression of the Grafana dashboard and of the recording rules."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "streamdet.json"
RULES = DEPLOY / "prometheus" / "rules.yml"
GRAFANA_VARIABLES = {"$entity": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) with Grafana's template variables substituted as Grafana would for 'All'."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def recording_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["record"], rule["expr"]) for group in groups for rule in group["rules"] if "record" in rule]
