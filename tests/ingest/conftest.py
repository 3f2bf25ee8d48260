from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def collectd_capture() -> Path:
    """The real collectd write_kafka capture in the shared data (../shared/data/agents), or a skip saying why."""
    from streamdet.config import load_config
    from tests.conftest import SMD_CONFIG

    cfg = load_config(SMD_CONFIG)
    path = cfg.path(cfg.data.root) / "agents" / "collectd-host-a.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not found (set STREAMDET_DATA to the shared data folder)")
    return path
