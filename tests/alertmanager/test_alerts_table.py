"""`streamdet alerts`: the alerts topic as a terminal table, read from a real broker by the real command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

from .helpers import alert_message
from .test_bridge import produce

pytestmark = [pytest.mark.kafka]

T = 1_700_000_000.0


def test_the_table_shows_each_event_with_how_far_over_since_when_and_the_channels(broker, names):
    produce(broker.bootstrap, names["alerts"], [
        ("machine-1-2", alert_message("machine-1-2", "firing", T, T + 2, score=7.25, threshold=3.1)),
        ("machine-1-2", b"{oops"),
        ("machine-1-2", alert_message("machine-1-2", "resolved", T, T + 90, score=9.5, threshold=3.0))])
    out = subprocess.run([sys.executable, "-m", "streamdet", "alerts", "--config", str(REPO / "config" / "smd.yaml"),
                          "--set", f"kafka.bootstrap_servers={broker.bootstrap}",
                          "--set", f"kafka.alerts_topic={names['alerts']}", "--limit", "3", "--idle", "30"],
                         capture_output=True, text=True, timeout=90, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "STATUS", "ENTITY", "SCORE", "THRESHOLD", "OVER", "SINCE", "(UTC)",
                                "TOP", "CHANNELS"]
    assert lines[1].split() == ["2023-11-14", "22:13:22", "firing", "machine-1-2", "7.25", "3.1", "2.3x",
                                "2023-11-14", "22:13:20", "cpu_r", "61", "%,", "load_1", "22", "%"]
    assert lines[2].startswith("malformed message: not_json")
    assert lines[3].split()[2:7] == ["resolved", "machine-1-2", "9.5", "3", "3.2x"]
    assert len(lines) == 4
