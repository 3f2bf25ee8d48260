from __future__ import annotations

import gzip

import pytest

from tests.ingest.collectd_messages import collectd_messages


@pytest.fixture(scope="session", params=["generated", "real"])
def collectd_capture(request) -> list[bytes]:
    """collectd write_kafka message values, one per value list, in order: made up in the real capture's shape
    (tests/ingest/collectd_messages.py; runs everywhere), and the real capture in the shared data
    (../shared/data/agents), which skips, saying why, where that data is absent."""
    if request.param == "generated":
        return collectd_messages()
    from tests.conftest import benchmark_root

    path = benchmark_root() / "agents" / "collectd-host-a.jsonl.gz"
    if not path.exists():
        pytest.skip(f"the real collectd capture {path} is not there (set STREAMDET_DATA to the shared data folder); "
                    "the generated capture ran instead")
    return gzip.open(path).read().splitlines()
