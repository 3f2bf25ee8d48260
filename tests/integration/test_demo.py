"""`streamdet demo` (what `make demo` runs) as a user runs it: a subprocess that trains, starts its own broker, replays,
prints alerts and a summary, and ends by itself. Checked against the label files read independently here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.kafka

DEMO_CONFIG = REPO / "config" / "demo.yaml"
ENTITIES = ["machine-1-4", "machine-2-1", "machine-3-3"]  # config/demo.yaml
LIMIT = 2500
ALERT_LINE = re.compile(r"^  (firing|resolved) +(\S+) +\d\d:\d\d:\d\d rows +(\d+)(?:-(\d+))? +(score|peak) +(\S+) +"
                        r"threshold +(\S+) +top: (.+)$")


def run_demo(tmp_path: Path, *overrides: str) -> str:
    cmd = [sys.executable, "-m", "streamdet", "demo", "--config", str(DEMO_CONFIG), "--limit", str(LIMIT),
           "--set", f"model.bundle={tmp_path / 'demo.pt'}", "--set", "train.epochs=1",
           "--set", "train.max_windows=1500", "--set", "train.device=cpu"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def summary(out: str) -> dict[str, int]:
    values = {}
    for key in ("records replayed", "records scored", "labelled segments", "segments alerted"):
        match = re.search(rf"^  {key} +(\d+)", out, re.M)
        assert match, f"summary line {key!r} missing from:\n{out[-2000:]}"
        values[key] = int(match.group(1))
    firing, resolved = re.search(r"^  alerts +(\d+) firing, (\d+) resolved", out, re.M).groups()
    values["firing"], values["resolved"] = int(firing), int(resolved)
    return values


def test_demo_on_smd_trains_alerts_and_summarises_against_the_labels(tmp_path, benchmark_data):
    out = run_demo(tmp_path)
    assert (tmp_path / "demo.pt").exists(), "the demo trains a bundle when there is none"
    assert re.search(r"^daemon ready; Prometheus metrics at http://127\.0\.0\.1:\d+/metrics$", out, re.M)
    numbers = summary(out)
    assert numbers["records replayed"] == numbers["records scored"] == LIMIT * len(ENTITIES)

    from streamdet.data.series import label_segments

    segments = sum(len(label_segments(np.loadtxt(benchmark_data / "smd" / f"{e}.test_label.csv.gz", skiprows=1,
                                                 max_rows=LIMIT))) for e in ENTITIES)
    assert numbers["labelled segments"] == segments > 0
    assert 0 < numbers["segments alerted"] <= segments

    lines = [ALERT_LINE.match(line) for line in out.splitlines() if line.startswith(("  firing", "  resolved"))]
    assert lines and all(lines), "every alert line has entity, rows, score, threshold and top channels"
    assert sum(m.group(1) == "firing" for m in lines) == numbers["firing"] > 0
    for m in lines:
        status, entity, start, end, label = m.group(1), m.group(2), int(m.group(3)), m.group(4), m.group(5)
        assert entity in ENTITIES and 0 <= start < LIMIT
        if status == "resolved":
            assert label == "peak" and end is not None and start < int(end) < LIMIT
        else:
            assert label == "score" and end is None
        assert float(m.group(6)) > float(m.group(7)), "an alert's score is over its threshold"


def test_demo_without_the_benchmark_data_runs_on_the_synthetic_generator(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = run_demo(tmp_path, f"data.root={empty}")
    assert "no benchmark data at" in out and "using the synthetic generator" in out
    assert (tmp_path / "demo-synthetic.pt").exists()
    numbers = summary(out)
    assert numbers["records replayed"] == numbers["records scored"] > 0
    assert numbers["labelled segments"] > 0, "the generator injects labelled anomalies"


def test_a_segment_counts_as_alerted_when_an_alert_is_open_during_it_or_fires_just_after_it():
    from streamdet.serve.demo import SEGMENT_SLACK, segments_alerted

    segment = [(100, 110)]
    assert segments_alerted(segment, [(90, 105)]) == 1, "fired before, still open at its start"
    assert segments_alerted(segment, [(90, None)]) == 1, "fired before and never resolved"
    assert segments_alerted(segment, [(110 + SEGMENT_SLACK, 200)]) == 1, "fired within the slack after its end"
    assert segments_alerted(segment, [(90, 100)]) == 0, "resolved at the segment's first row: closed before it"
    assert segments_alerted(segment, [(111 + SEGMENT_SLACK, None)]) == 0, "fired too late"
    assert segments_alerted([(100, 110), (300, 310)], [(95, 305)]) == 2, "one long alert covers both"
