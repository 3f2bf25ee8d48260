"""Per-sample decoders (collectd, telegraf, influx, prometheus): mapping rules, rates, and every rejection naming
what is wrong. The collectd captures are real write_kafka output (../shared/data/agents) and one generated in its
shape (tests/ingest/collectd_messages.py)."""

from __future__ import annotations

import orjson
import pytest

from streamdet.errors import DecodeError
from streamdet.pipeline.decode import REASONS
from streamdet.pipeline.formats import FormatDecoder, FormatOptions


def decoder(fmt: str, **options) -> FormatDecoder:
    return FormatDecoder(fmt, FormatOptions(max_record_bytes=4096, **options))


def reject(dec: FormatDecoder, raw) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        dec.decode(raw if isinstance(raw, bytes) else orjson.dumps(raw))
    assert info.value.reason in REASONS and info.value.detail
    return info.value


def collectd(values, dstypes, dsnames, time=1000.0, host="h", plugin="interface", plugin_instance="eth0",
             type_="if_octets", type_instance="") -> bytes:
    return orjson.dumps([{"values": values, "dstypes": dstypes, "dsnames": dsnames, "time": time, "interval": 1.0,
                          "host": host, "plugin": plugin, "plugin_instance": plugin_instance, "type": type_,
                          "type_instance": type_instance}])


# --- collectd ---------------------------------------------------------------------------------------------------

def test_a_collectd_capture_decodes_without_rejects(collectd_capture):
    dec = decoder("collectd")
    samples, rejected = dec.decode_many(collectd_capture)
    assert not rejected
    channels = {s.channel for _, s in samples}
    assert len(channels) == 143 and {s.entity for _, s in samples} == {"host-a"}
    assert {"cpu-0/cpu-idle", "load/load/shortterm", "memory/memory-used", "interface-lo/if_octets/rx"} <= channels
    assert all(s.kind == "gauge" and s.interval == 1.0 for _, s in samples)


def test_a_known_collectd_series_takes_the_fast_path_with_the_same_samples(collectd_capture):
    raws = collectd_capture
    parser = decoder("collectd").parser
    first = [parser.decode(raw) for raw in raws]  # the checked path learns every series
    fast = [parser._known(orjson.loads(raw)) for raw in raws[len(raws) // 2:]]
    assert all(samples is not None for samples in fast)  # every message of the second half is a known series
    assert fast == first[len(raws) // 2:]


def test_collectd_channel_names_and_multi_value_lists():
    dec = decoder("collectd")
    load = dec.decode(collectd([0.1, 0.2, 0.3], ["gauge"] * 3, ["shortterm", "midterm", "longterm"], plugin="load",
                               plugin_instance="", type_="load"))
    assert [(s.channel, s.value) for s in load] == [("load/load/shortterm", 0.1), ("load/load/midterm", 0.2),
                                                    ("load/load/longterm", 0.3)]
    mem = dec.decode(collectd([5], ["gauge"], ["value"], plugin="memory", plugin_instance="", type_="memory",
                              type_instance="used"))
    assert [(s.entity, s.channel, s.ts, s.value) for s in mem] == [("h", "memory/memory-used", 1000.0, 5.0)]


def test_collectd_agent_rates_skip_the_first_null_and_reject_a_negative_rate():
    dec = decoder("collectd")
    assert dec.decode(collectd([None, None], ["derive"] * 2, ["rx", "tx"])) == []
    assert [s.value for s in dec.decode(collectd([10.5, 0], ["derive"] * 2, ["rx", "tx"]))] == [10.5, 0.0]
    err = reject(dec, collectd([-3.0, 1.0], ["derive"] * 2, ["rx", "tx"]))
    assert err.reason == "counter_reset" and "values[0] (rx)" in err.detail


def test_collectd_raw_totals_become_rates_with_first_sample_wrap_and_reset():
    dec = decoder("collectd", agent_rates=False)
    assert dec.decode(collectd([1000], ["derive"], ["value"], time=10.0)) == []  # baseline only
    assert [s.value for s in dec.decode(collectd([1500], ["derive"], ["value"], time=12.0))] == [250.0]
    assert dec.decode(collectd([1500], ["derive"], ["value"], time=12.0)) == []  # a duplicate delivery
    err = reject(dec, collectd([20], ["derive"], ["value"], time=13.0))
    assert err.reason == "counter_reset" and "1500" in err.detail and "20" in err.detail
    assert [s.value for s in dec.decode(collectd([30], ["derive"], ["value"], time=14.0))] == [10.0]
    top = 2 ** 32 - 100
    dec.decode(collectd([top], ["counter"], ["value"], type_="if_packets", time=10.0))
    wrapped = dec.decode(collectd([50], ["counter"], ["value"], type_="if_packets", time=11.0))
    assert [s.value for s in wrapped] == [150.0]  # 32-bit wrap: 100 to the top, 50 after it
    err = reject(dec, collectd([10], ["counter"], ["value"], type_="if_packets", time=12.0))
    assert err.reason == "counter_reset"  # 50 -> 10 is no wrap
    assert reject(dec, collectd([5], ["derive"], ["value"], time=9.0)).reason == "late"


BAD_COLLECTD = [
    (b"\xff\xfe", "not_utf8", ""),
    (b"[{", "not_json", ""),
    (b'"text"', "not_object", "string"),
    (b"[1]", "not_object", "[0]"),
    ([{"values": [1], "dstypes": ["gauge"], "dsnames": ["value"], "time": 1, "plugin": "p", "type": "t"}],
     "no_field", "[0].host"),
    (collectd([1], ["gauge"], ["value"], host=""), "bad_entity", "[0].host"),
    (collectd([1], ["gauge"], ["value"], time="now"), "bad_ts", "[0].time"),
    (collectd([1], ["gauge"], ["value"], time=-1), "bad_ts", "[0].time"),
    (collectd([1, 2], ["gauge"], ["value"]), "bad_field", "lengths"),
    (collectd([], [], []), "bad_field", "[0].values"),
    (collectd([1], ["histogram"], ["value"]), "bad_field", "dstypes[0]"),
    (collectd([None], ["gauge"], ["value"]), "wrong_type", "values[0] (value)"),
    (collectd(["1"], ["gauge"], ["value"]), "wrong_type", "values[0]"),
    (collectd([True], ["gauge"], ["value"]), "wrong_type", "values[0]"),
    (collectd([1e300], ["gauge"], ["value"]), "non_finite", "values[0]"),
    (collectd([1], ["gauge"], ["value"], plugin=""), "bad_field", "plugin/type"),
    (collectd([1], ["gauge"], ["value"], plugin=7), "bad_field", "[0].plugin"),
    (b'[{"values":[' + b"1," * 3000 + b'1]}]', "too_large", "max_record_bytes"),
]


@pytest.mark.parametrize("raw, reason, where", BAD_COLLECTD)
def test_collectd_rejects_name_what_is_wrong(raw, reason, where):
    err = reject(decoder("collectd"), raw)
    assert err.reason == reason and where in err.detail


# --- telegraf JSON ----------------------------------------------------------------------------------------------

def telegraf(fields, tags=None, name="cpu", timestamp=1796032907) -> dict:
    return {"name": name, "tags": {"host": "web-1", "cpu": "cpu-total"} if tags is None else tags, "fields": fields,
            "timestamp": timestamp}


def test_telegraf_metric_and_batch_with_selected_tags_and_units():
    dec = decoder("telegraf")
    one = dec.decode(orjson.dumps(telegraf({"usage_user": 3.25, "usage_idle": 95, "state": "ok", "up": True})))
    assert [(s.entity, s.channel, s.ts, s.value) for s in one] == [
        ("web-1", "cpu/usage_user{cpu=cpu-total}", 1796032907.0, 3.25),
        ("web-1", "cpu/usage_idle{cpu=cpu-total}", 1796032907.0, 95.0),
        ("web-1", "cpu/up{cpu=cpu-total}", 1796032907.0, 1.0)]
    assert dec.parser.skipped_fields == 1  # the string field is not a metric
    batch = dec.decode(orjson.dumps({"metrics": [telegraf({"a": 1}, timestamp=1796032907000),
                                                 telegraf({"b": 2}, name="mem", tags={"host": "web-2"},
                                                          timestamp=1796032907000000000)]}))
    assert [(s.entity, s.channel, s.ts) for s in batch] == [("web-1", "cpu/a{cpu=cpu-total}", 1796032907.0),
                                                             ("web-2", "mem/b", 1796032907.0)]
    plain = decoder("telegraf", channel_tags=(), entity_key="cpu").decode(orjson.dumps(telegraf({"x": 1})))
    assert [(s.entity, s.channel) for s in plain] == [("cpu-total", "cpu/x")]


def test_telegraf_counters_become_rates():
    dec = decoder("telegraf", counters=("net/bytes_*",))
    first = orjson.dumps(telegraf({"bytes_recv": 1000, "drop_in": 3}, tags={"host": "h"}, name="net", timestamp=10))
    assert [(s.channel, s.value) for s in dec.decode(first)] == [("net/drop_in", 3.0)]
    second = orjson.dumps(telegraf({"bytes_recv": 3000, "drop_in": 4}, tags={"host": "h"}, name="net", timestamp=20))
    assert [(s.channel, s.value) for s in dec.decode(second)] == [("net/bytes_recv", 200.0), ("net/drop_in", 4.0)]


BAD_TELEGRAF = [
    ([1], "not_object", "list"),
    ({"metrics": 5}, "bad_field", "metrics"),
    ({"metrics": [7]}, "not_object", "metrics[0]"),
    ({"tags": {"host": "h"}, "fields": {"a": 1}, "timestamp": 1}, "no_field", "name"),
    (telegraf({"a": 1}, tags={"cpu": "0"}), "no_entity", "tags.host"),
    (telegraf({"a": 1}, tags={"host": 5}), "bad_field", "tags"),
    (telegraf([1]), "bad_field", "fields"),
    (telegraf({"a": 1}, timestamp="12:00"), "bad_ts", "timestamp"),
    (telegraf({"a": None}), "wrong_type", "fields.a"),
    (telegraf({"a": 1e39}), "non_finite", "fields.a"),
    ({"metrics": [telegraf({"a": 1}), telegraf({"b": [2]})]}, "wrong_type", "metrics[1].fields.b"),
]


@pytest.mark.parametrize("raw, reason, where", BAD_TELEGRAF)
def test_telegraf_rejects_name_what_is_wrong(raw, reason, where):
    err = reject(decoder("telegraf"), raw)
    assert err.reason == reason and where in err.detail


# --- influx line protocol ---------------------------------------------------------------------------------------

def test_influx_lines_types_escapes_and_precision():
    raw = (b'cpu,host=web-1,cpu=cpu-total usage_user=3.25,usage_idle=95i,ok=t,msg="a b, \\"c\\"" 1796032907000000000\n'
           b"# a comment\n\n"
           b"disk\\ io,host=web-1,path=/var\\ lib\\,x used=5u 1796032908\n")
    dec = decoder("influx")
    samples = dec.decode(raw)
    assert [(s.entity, s.channel, s.ts, s.value) for s in samples] == [
        ("web-1", "cpu/usage_user{cpu=cpu-total}", 1796032907.0, 3.25),
        ("web-1", "cpu/usage_idle{cpu=cpu-total}", 1796032907.0, 95.0),
        ("web-1", "cpu/ok{cpu=cpu-total}", 1796032907.0, 1.0),
        ("web-1", "disk io/used{path=/var lib,x}", 1796032908.0, 5.0)]
    assert dec.parser.skipped_fields == 1


BAD_INFLUX = [
    (b"\xff\xfe", "not_utf8", ""),
    (b"cpu,host=h usage=1", "no_ts", "line 1"),
    (b"cpu,host=h usage=1 yesterday", "bad_ts", "line 1"),
    (b"cpu usage=1 1796032907", "no_entity", "host"),
    (b"cpu,host=h usage=abc 1796032907", "wrong_type", "field usage"),
    (b"cpu,host=h usage=nan 1796032907", "non_finite", "field usage"),
    (b"cpu,host=h usage=1e400 1796032907", "non_finite", "field usage"),
    (b"cpu,host=h usage 1796032907", "bad_field", "key=value"),
    (b"cpu,host=h a=1 1796032907\ncpu,host=h b=x 1796032907", "wrong_type", "line 2"),
    (b"cpu,host=h a=1 2 3", "bad_field", "4 section"),
]


@pytest.mark.parametrize("raw, reason, where", BAD_INFLUX)
def test_influx_rejects_name_what_is_wrong(raw, reason, where):
    err = reject(decoder("influx"), raw)
    assert err.reason == reason and where in err.detail


# --- prometheus-kafka-adapter -----------------------------------------------------------------------------------

def prom(name, value, ts="2026-11-30T12:00:00Z", **labels) -> dict:
    return {"timestamp": ts, "value": value, "name": name,
            "labels": {"__name__": name, "instance": "web-1:9100", "job": "node", **labels}}


def test_prometheus_sample_labels_and_timestamp():
    dec = decoder("prometheus")
    [s] = dec.decode(orjson.dumps(prom("node_load1", "0.25")))
    assert (s.entity, s.channel, s.value, s.ts) == ("web-1:9100", "node_load1", 0.25, 1796040000.0)
    [s] = dec.decode(orjson.dumps(prom("node_filesystem_free_bytes", "10", mountpoint="/", device="vda1")))
    assert s.channel == "node_filesystem_free_bytes{device=vda1,mountpoint=/}"
    [s] = decoder("prometheus", channel_tags=("mountpoint",)).decode(
        orjson.dumps(prom("node_filesystem_free_bytes", "10", mountpoint="/", device="vda1")))
    assert s.channel == "node_filesystem_free_bytes{mountpoint=/}"


def test_prometheus_counters_are_rates_and_a_decrease_is_a_reset():
    dec = decoder("prometheus")
    assert dec.decode(orjson.dumps(prom("node_cpu_seconds_total", "100", cpu="0", mode="user"))) == []
    [s] = dec.decode(orjson.dumps(prom("node_cpu_seconds_total", "130", "2026-11-30T12:00:15Z", cpu="0",
                                       mode="user")))
    assert s.channel == "node_cpu_seconds_total{cpu=0,mode=user}" and s.value == 2.0
    err = reject(dec, prom("node_cpu_seconds_total", "3", "2026-11-30T12:00:30Z", cpu="0", mode="user"))
    assert err.reason == "counter_reset" and "130" in err.detail


BAD_PROMETHEUS = [
    (prom("up", "NaN"), "non_finite", "value"),
    (prom("up", "+Inf"), "non_finite", "value"),
    (prom("up", "one"), "wrong_type", "value"),
    (prom("up", None), "wrong_type", "value"),
    (prom("up", "1", ts="yesterday"), "bad_ts", "timestamp"),
    (prom("up", "1", ts=None), "bad_ts", "timestamp"),
    ({"value": "1", "name": "up", "labels": {"instance": "a"}}, "no_field", "timestamp"),
    ({"timestamp": "2026-11-30T12:00:00Z", "value": "1", "name": "up", "labels": {"job": "x"}}, "no_entity",
     "labels.instance"),
    ({"timestamp": "2026-11-30T12:00:00Z", "value": "1", "name": "", "labels": {"instance": "a"}}, "bad_field",
     "name"),
    ({"timestamp": "2026-11-30T12:00:00Z", "value": "1", "name": "up", "labels": {"instance": 3}}, "bad_field",
     "labels"),
]


@pytest.mark.parametrize("raw, reason, where", BAD_PROMETHEUS)
def test_prometheus_rejects_name_what_is_wrong(raw, reason, where):
    err = reject(decoder("prometheus"), raw)
    assert err.reason == reason and where in err.detail
