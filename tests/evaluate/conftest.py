"""Shared fixtures of the evaluation tests."""

from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def benchmark(monkeypatch):
    """tools/benchmark.py as a module (tools/ is not a package)."""
    monkeypatch.syspath_prepend(str(TOOLS))
    import benchmark

    return benchmark
