"""Start-up problems an operator must be told about: a metrics port already taken, a metrics topic that has fewer
partitions than configured."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.broker import free_port
from tests.conftest import REPO, SMD_CONFIG, tiny_overrides


def test_a_metrics_port_already_in_use_exits_2_with_one_line_naming_it(tiny_bundle):
    """Another process (a second daemon on the same host, a leftover) holds metrics.port: the daemon must stop at
    once with exit 2 and one line that names the port, not a traceback and exit 1 that looks like a crash."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "streamdet", "run", "--config", str(SMD_CONFIG)]
        for item in tiny_overrides(tiny_bundle) + [f"kafka.bootstrap_servers=127.0.0.1:{free_port()}",
                                                   "metrics.host=127.0.0.1", f"metrics.port={port}"]:
            cmd += ["--set", item]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("streamdet: error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "metrics" in errors[0], done.stderr[-3000:]


@pytest.mark.kafka
def test_a_metrics_topic_created_before_streamdet_with_fewer_partitions_is_reported(broker, names, caplog):
    """A producer (collectd, a replay) that writes before the daemon's first start has the broker auto-create the
    metrics topic with its default partition count (Kafka's is 1): kafka.partitions is then silently not applied,
    and every instance beyond that count stays idle and not ready. The start-up says so, once."""
    kafka = load_config(None, [f"kafka.metrics_topic={names['metrics']}", "kafka.partitions=1"]).kafka
    ensure_topics(kafka.at(broker.bootstrap), [names["metrics"]])  # as the broker's auto-creation would
    wanted = load_config(None, [f"kafka.metrics_topic={names['metrics']}", "kafka.partitions=4"]).kafka
    caplog.set_level(logging.INFO, logger="streamdet")
    assert ensure_topics(wanted.at(broker.bootstrap), [names["metrics"], names["alerts"]]) == [names["alerts"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and names["metrics"] in warnings[0] and "1 partition" in warnings[0], warnings
    caplog.clear()
    ensure_topics(wanted.at(broker.bootstrap), [names["alerts"]])  # only the metrics topic bounds the instances
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
