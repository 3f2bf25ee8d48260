"""The PromQL a deployment depends on: every expression of the Grafana dashboard and of the recording rules."""

from __future__ import annotations

import json
import re
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


RULE_TESTS = RULES.with_name("rules.test.yml")
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d))\]")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def scaled_duration(text: str, factor: float) -> str:
    """A Prometheus duration multiplied by `factor`, in whole milliseconds ("10m" * 1/30 -> "20000ms")."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a simple Prometheus duration: {text!r}")
    return f"{max(1, round(int(m.group(1)) * _SECONDS[m.group(2)] * factor * 1000))}ms"


def scaled_rules(factor: float) -> dict:
    """rules.yml with every `for:` and every range selector `[d]` multiplied by `factor`: the same expressions and
    thresholds on a faster clock, so that a live test sees each alert go pending then firing in seconds."""
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(lambda m: f"[{scaled_duration(m.group(1), factor)}]", rule["expr"])
            if "for" in rule:
                rule["for"] = scaled_duration(rule["for"], factor)
    return groups


def alerting_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
