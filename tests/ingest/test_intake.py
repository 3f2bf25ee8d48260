"""The per-sample front of the pipeline: raw messages -> rows for the windows, rejects for the dead-letter topic."""

from __future__ import annotations

import orjson

from streamdet.config import load_config
from streamdet.pipeline.intake import SampleIntake

CHANNELS = ("cpu-0/cpu-user", "load/load/shortterm", "memory/memory-used")


def message(host: str, ts: float, plugin: str, type_: str, type_instance: str, dsnames, values, dstype="gauge",
            plugin_instance="") -> bytes:
    return orjson.dumps([{"values": values, "dstypes": [dstype] * len(values), "dsnames": dsnames, "time": ts,
                          "interval": 1.0, "host": host, "plugin": plugin, "plugin_instance": plugin_instance,
                          "type": type_, "type_instance": type_instance}])


def cycle(host: str, ts: float, offset: int, cpu=1.0, skip=()) -> list[tuple[bytes, tuple]]:
    raws = [message(host, ts, "cpu", "cpu", "user", ["value"], [cpu], "derive", "0"),
            message(host, ts, "load", "load", "", ["shortterm", "midterm", "longterm"], [0.5, 0.4, 0.3]),
            message(host, ts, "memory", "memory", "used", ["value"], [1e9])]
    return [(raw, ("metrics", 0, offset + k, 0)) for k, raw in enumerate(raws) if k not in skip]


def intake(*overrides: str) -> SampleIntake:
    cfg = load_config(None, ["input.format=collectd", *overrides])
    return SampleIntake(cfg.input, CHANNELS, clock=lambda: 0.0)


def test_messages_become_rows_with_the_first_records_source():
    front = intake()
    got = front.take(cycle("web-1", 100.0, 0) + cycle("web-1", 101.0, 3))
    assert got.entities == ["web-1", "web-1"] and got.ts == [100.0, 101.0]
    assert got.values.tolist() == [[1.0, 0.5, 1e9]] * 2 and got.values.dtype.name == "float32"
    assert got.sources == [("metrics", 0, 0, 0), ("metrics", 0, 3, 0)] and not got.rejects
    assert got.held == {"web-1": ("metrics", 0, 5, 0)} and list(front.pending_sources()) == []
    assert front.assembler.unknown == {"load/load/midterm": 2, "load/load/longterm": 2}


def test_bad_messages_refused_samples_and_dropped_rows_are_rejects_with_their_source():
    front = intake("input.carry_forward=0")
    bad = (b'[{"values":[1]}]', ("metrics", 0, 9, 0))
    got = front.take(cycle("web-1", 1000.0, 0, skip=(2,)) + [bad])
    assert [(r[1], r[2]) for r in got.rejects] == [(("metrics", 0, 9, 0), "no_field")]
    assert list(front.pending_sources()) == [("metrics", 0, 0, 0)]  # the open row keeps the commit floor down
    later = front.take(cycle("web-1", 1002.0, 10) + [(message("web-1", 1002.0 - 400, "cpu", "cpu", "user", ["value"],
                                                             [1.0], "derive", "0"), ("metrics", 0, 13, 0))])
    [(raw, source, reason, detail)] = [r for r in later.rejects if r[2] == "missing_channel"]
    assert source == ("metrics", 0, 0, 0) and "memory/memory-used" in detail
    assert orjson.loads(raw) == {"entity": "web-1", "ts": 1000.0, "missing": ["memory/memory-used"],
                                 "metrics": {"cpu-0/cpu-user": 1.0, "load/load/shortterm": 0.5}}
    [(raw, source, reason, _)] = [r for r in later.rejects if r[2] == "late"]
    assert source == ("metrics", 0, 13, 0) and b'"time":602.0' in raw
    assert later.entities == ["web-1"] and later.ts == [1002.0]


def test_samples_of_records_a_restored_checkpoint_holds_are_skipped():
    front = intake()
    got = front.take(cycle("web-1", 100.0, 0) + cycle("web-1", 101.0, 3),
                     already_held=lambda entity, source: source[2] < 3)
    assert got.sources == [("metrics", 0, 3, 0)] and got.ts == [101.0]
