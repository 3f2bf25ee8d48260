"""`promtool test rules`: every rule of deploy/prometheus/rules.yml has a unit test, and every test passes."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from .promql import RULE_TESTS, alerting_rules, recording_rules, scaled_duration


def test_every_rule_has_a_unit_test_that_sees_it_fire_or_evaluate():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case["exp_alerts"]}
    evaluated = {case["expr"] for t in tests for case in t.get("promql_expr_test", [])}
    assert set(alerting_rules()) - firing == set(), "alerts never seen firing in rules.test.yml"
    assert set(alerting_rules()) - quiet == set(), "alerts never seen quiet (before `for`, or a healthy input)"
    assert {name for name, _ in recording_rules()} - evaluated == set(), "recording rules without a test"


def test_promtool_unit_tests_pass():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus; CI installs it)")
    out = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_durations_scale_for_the_live_test():
    assert scaled_duration("10m", 1 / 30) == "20000ms"
    assert scaled_duration("1m", 1 / 30) == "2000ms"
    with pytest.raises(ValueError):
        scaled_duration("1h30m", 0.5)
