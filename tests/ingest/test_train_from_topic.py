"""`streamdet train --from-topic`: collectd messages (generated in the real capture's shape, and the real capture where
the shared data is) on the real broker -> rows per entity -> a bundle whose channels are what the fleet sends (rare
and constant channels left out and listed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from streamdet.bundle import load_bundle
from streamdet.data.topic import parse_duration, parse_moment
from streamdet.errors import DataError
from tests.conftest import REPO


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], timestamp_ms: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in messages:
        producer.produce(topic, value, key, timestamp=timestamp_ms)
    assert producer.flush(30) == 0


def as_host(raw: bytes, host: str) -> bytes:
    return raw.replace(b'"host":"host-a"', f'"host":"{host}"'.encode())


def train(bootstrap: str, topic: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamdet", "train", "--config", str(REPO / "config" / "smd.yaml"), "--from-topic",
           "--no-progress", "--out", str(tmp_path / "fleet.pt"),
           "--set", f"kafka.bootstrap_servers={bootstrap}", "--set", f"kafka.metrics_topic={topic}",
           "--set", "input.format=collectd", "--set", "model.name=lstm_ae", "--set", "model.preset=tiny",
           "--set", "model.window=4", "--set", "scoring.stride=2", "--set", "train.epochs=1",
           "--set", "train.val_fraction=0.3", "--set", "train.device=cpu", "--log-format", "json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)


def test_train_from_a_collectd_topic_keeps_the_fleets_varying_channels(collectd_capture, broker, names, tmp_path):
    capture = collectd_capture
    topic = names["metrics"]
    now_ms = int(time.time() * 1000)
    old = [(b"host-old", as_host(raw, "host-old")) for raw in capture]  # two hours ago: outside --since 1h
    fleet = [(b"host-a", raw) for raw in capture] + \
            [(b"host-b", as_host(raw, "host-b")) for raw in capture if b'"plugin_instance":"ifb0"' not in raw]
    late = [(b"host-late", as_host(raw, "host-late")) for raw in capture]  # now: after --until 10m
    produce(broker.bootstrap, topic, old, now_ms - 2 * 3600 * 1000)
    produce(broker.bootstrap, topic, fleet, now_ms - 30 * 60 * 1000)
    produce(broker.bootstrap, topic, late, now_ms)
    done = train(broker.bootstrap, topic, tmp_path, "--since", "1h", "--until", "10m",
                 "--set", "train.min_channel_share=1.0", "--set", "train.exclude_channels=[swap/*, vmem/*]")
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = load_bundle(tmp_path / "fleet.pt")
    source = bundle.meta["training"]["source"]
    assert source["dataset"] == f"topic:{topic}" and source["messages"] == len(fleet)
    assert sorted(source["entities"]) == ["host-a", "host-b"] == sorted(bundle.meta["training"]["entities"])
    channels = set(bundle.channels)
    assert {"cpu-0/cpu-user", "load/load/shortterm", "memory/memory-used"} <= channels
    assert not any("ifb0" in c for c in channels)  # host-b never sends it: below the share of 1.0
    assert "interface-ifb0/if_octets/rx" in source["rare_channels"]
    assert "swap/swap-used" in source["excluded_channels"] and not any(c.startswith(("swap/", "vmem/"))
                                                                       for c in channels)
    assert "interface-ifb1/if_errors/rx" in source["constant_channels"] and not channels & set(source["constant_channels"])
    log = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    line = next(e["msg"] for e in log if "from topic" in e.get("msg", ""))
    assert "on too few entities" in line and "interface-ifb0/if_octets/rx" in line and "constant" in line


def test_an_empty_history_and_bad_durations_say_what_is_wrong(broker, names, tmp_path):
    produce(broker.bootstrap, names["metrics"], [(b"h", b"not json")], int(time.time() * 1000))
    done = train(broker.bootstrap, names["metrics"], tmp_path)
    assert done.returncode == 2 and "no channel is sent" in done.stderr and "not_json" in done.stderr
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration("15") == 15
    with pytest.raises(DataError, match="expected a duration"):
        parse_duration("yesterday")
    assert parse_moment("10m", now=10_000.0) == 9_400.0
    assert parse_moment("2026-12-02T16:08:30Z", 0) == parse_moment("2026-12-02T16:08:30", 0) == 1_796_227_710.0
    assert parse_moment("2026-12-02T17:08:30+01:00", 0) == 1_796_227_710.0
    with pytest.raises(DataError, match="--until 'yesterday': expected an ISO 8601 time"):
        parse_moment("yesterday", 0)


def test_per_entity_training_from_the_topic_retrains_only_what_the_history_changed(collectd_capture, broker, names,
                                                                                  tmp_path):
    """`train --from-topic --per-entity` (what a retraining timer runs): a default and one bundle per host, each
    from that host's rows on the topic; run again after a host joins, only the default and the new host train."""
    topic, out = names["metrics"], tmp_path / "bundles"
    one_host = ("--per-entity", "--out", str(out), "--workers", "2", "--set", "train.val_fraction=0.5",
                "--set", "scoring.stride=1")  # a host's rows alone: enough validation scores to calibrate
    produce(broker.bootstrap, topic, [(h.encode(), as_host(raw, h)) for h in ("host-a", "host-b")
                                      for raw in collectd_capture], int(time.time() * 1000))
    first = train(broker.bootstrap, topic, tmp_path, *one_host)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "3 trained, 0 up to date, 0 failed" in first.stdout
    for host in ("host-a", "host-b"):
        meta = load_bundle(out / "entities" / f"{host}.pt").meta["training"]
        assert meta["entities"] == [host] and meta["source"]["dataset"] == f"topic:{topic}"
    assert sorted(load_bundle(out / "default.pt").meta["training"]["entities"]) == ["host-a", "host-b"]
    stamp = (out / "entities" / "host-a.pt").stat().st_mtime_ns

    produce(broker.bootstrap, topic, [(b"host-c", as_host(raw, "host-c")) for raw in collectd_capture],
            int(time.time() * 1000))
    second = train(broker.bootstrap, topic, tmp_path, *one_host)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trained, 2 up to date, 0 failed" in second.stdout  # the default and host-c
    assert (out / "entities" / "host-a.pt").stat().st_mtime_ns == stamp
    assert load_bundle(out / "entities" / "host-c.pt").meta["training"]["entities"] == ["host-c"]
