"""tools/bench_models.py prints the docs/models.md table: one row per requested model, with real measurements (on the
synthetic fixture entity here, so that it runs without ../shared/data: the timings do not depend on the values)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ..conftest import TINY_CHANNELS, TINY_ENTITY
from ..fixture_data import OVERRIDES

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\w+) \| ([\d,]+) \| ([\d.]+)( \(fit\))? \| ([\d,]+) \|$")


def test_quick_bench_prints_one_measured_row_per_model():
    overrides = [arg for item in OVERRIDES for arg in ("--set", item)]
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_models.py"), "--quick", "--entity", TINY_ENTITY,
         "--models", "autoencoder,robust_z", "--repeats", "2", *overrides],
        capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith(f"# {TINY_ENTITY}: 300 windows of 32 x {TINY_CHANNELS}, tiny presets")
    rows = {m.group(1): m for m in map(ROW.match, out[3:]) if m}
    assert set(rows) == {"autoencoder", "robust_z"}, out
    assert rows["robust_z"].group(4) == " (fit)" and rows["autoencoder"].group(4) is None
    for match in rows.values():
        assert int(match.group(2).replace(",", "")) > 0 and int(match.group(5).replace(",", "")) > 0


FORMATS_ROW = re.compile(r"^\| (\w+) \| (\d+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)x \| [^|]* \| "
                         r"([\d,]+) / ([\d,]+) / ([\d,]+) \|$")


def test_formats_table_with_the_heap_kept_and_page_faults_per_call():
    from streamdet.bundle import aoti
    if aoti.missing_compiler() is not None:
        import pytest
        pytest.skip("no C++ compiler on this host")
    overrides = [arg for item in OVERRIDES for arg in ("--set", item)]
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_models.py"), "--quick", "--entity", TINY_ENTITY, "--formats",
         "--models", "robust_z", "--repeats", "1", "--cpu-time", "--heap", "--faults", *overrides],
        capture_output=True, text=True, timeout=600, check=True).stdout.splitlines()
    assert out[0].endswith("windows/s per CPU second, heap kept (--heap)"), out[0]
    rows = [m for m in map(FORMATS_ROW.match, out[3:]) if m]
    assert [int(m.group(2)) for m in rows] == [1, 16, 64, 256], out
    for match in rows:
        assert all(float(match.group(i).replace(",", "")) > 0 for i in (3, 4, 5, 6))
