"""Property-based tests of the per-sample decoders (as tests/reliability/test_hostile_input.py does for the
streamdet format): hostile payloads raise only DecodeError with a known reason and a detail; well-formed messages
decode to exactly the numbers that were sent; the rate state stays bounded."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamdet.errors import DecodeError
from streamdet.pipeline.decode import REASONS
from streamdet.pipeline.formats import FORMATS, FormatDecoder, FormatOptions
from streamdet.pipeline.formats.prometheus import COUNTER_SUFFIXES

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='\\,= "#'), min_size=1,
                max_size=12)  # no '#': a line protocol line starting with it is a comment
scalars = st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats() | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=25)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30)


def as_json(value) -> bytes:
    return json.dumps(value).encode()  # the stdlib writes NaN, Infinity and huge integers: good fuzz


collectd_like = st.lists(st.fixed_dictionaries({}, optional={
    "values": json_values, "dstypes": st.lists(st.sampled_from(["gauge", "derive", "counter", "absolute", "x", 3])),
    "dsnames": json_values, "time": json_values | finite, "interval": json_values, "host": json_values | names,
    "plugin": json_values | names, "plugin_instance": json_values, "type": json_values | names,
    "type_instance": json_values}), max_size=3).map(as_json)
telegraf_like = st.fixed_dictionaries({}, optional={
    "name": json_values | names, "tags": st.dictionaries(names, json_values | names, max_size=3) | json_values,
    "fields": st.dictionaries(names, json_values | finite, max_size=4) | json_values,
    "timestamp": json_values | finite}).map(as_json)
prometheus_like = st.fixed_dictionaries({}, optional={
    "name": json_values | names, "labels": st.dictionaries(names, names | json_values, max_size=3) | json_values,
    "value": json_values | finite.map(repr) | st.sampled_from(["NaN", "+Inf", "-Inf", "1e999", "0x10"]),
    "timestamp": json_values | st.sampled_from(["2026-11-30T12:00:00Z", "2026-13-01T00:00:00Z", "12:00"])
}).map(as_json)
influx_like = st.lists(st.text(st.sampled_from('cpu,host=h a=1.5i "x\\ 17960329070000t'), max_size=60),
                       max_size=4).map(lambda lines: "\n".join(lines).encode())
payloads = {"collectd": collectd_like, "telegraf": telegraf_like, "prometheus": prometheus_like,
            "influx": influx_like}


def check_only_decode_errors(fmt: str, batch: list[bytes]) -> None:
    dec = FormatDecoder(fmt, FormatOptions(max_record_bytes=2048, max_entities=3, max_channels=5,
                                           counters=("*",)))  # every telegraf/influx channel a counter: rates too
    for raw in batch:
        try:
            for sample in dec.decode(raw):
                assert type(sample.entity) is str and type(sample.channel) is str and sample.kind == "gauge"
                assert math.isfinite(sample.value) and math.isfinite(sample.ts) and sample.ts >= 0
        except DecodeError as exc:
            assert exc.reason in REASONS and exc.detail
    assert len(dec.rates._last) <= 3 and all(len(v) <= 5 for v in dec.rates._last.values())


@FUZZ
@given(st.sampled_from(sorted(FORMATS)), st.data())
def test_hostile_payloads_raise_only_decode_errors_with_known_reasons(fmt, data):
    hostile = payloads[fmt] | st.binary(max_size=200) | json_values.map(as_json)
    check_only_decode_errors(fmt, data.draw(st.lists(hostile, min_size=1, max_size=12)))


@FUZZ
@given(st.lists(st.tuples(names, names, finite), min_size=1, max_size=8), st.integers(10 ** 9, 4 * 10 ** 9))  # units are told by magnitude: after 2001
@example([("_total", "0", 0.0)], 10 ** 9)  # a Prometheus name with a counter's suffix (found by the fuzzer)
def test_wellformed_messages_decode_to_the_numbers_sent(metrics, ts):
    """One host's metrics in all four formats give the same (channel, value) pairs, in order, at the same time
    (a Prometheus counter, told by its name's suffix, gives no rate from its first sample)."""
    host = "host-1"
    for fmt, raw, expected in _encodings(host, metrics, ts):
        got = FormatDecoder(fmt, FormatOptions(max_record_bytes=1 << 20)).decode(raw)
        assert [(s.entity, s.channel, s.value) for s in got] == expected, fmt
        assert all(s.ts == float(ts) for s in got)


def _encodings(host: str, metrics: list, ts: int):
    collectd = [{"values": [v], "dstypes": ["gauge"], "dsnames": ["value"], "time": ts, "interval": 1.0,
                 "host": host, "plugin": p, "plugin_instance": "", "type": t, "type_instance": ""}
                for p, t, v in metrics]
    yield "collectd", orjson.dumps(collectd), [(host, f"{p}/{t}", v) for p, t, v in metrics]
    telegraf = {"metrics": [{"name": p, "tags": {"host": host}, "fields": {t: v}, "timestamp": ts}
                            for p, t, v in metrics]}
    yield "telegraf", orjson.dumps(telegraf), [(host, f"{p}/{t}", v) for p, t, v in metrics]
    lines = "\n".join(f"{p},host={host} {t}={v!r} {ts * 10 ** 9}" for p, t, v in metrics)
    yield "influx", lines.encode(), [(host, f"{p}/{t}", v) for p, t, v in metrics]
    for p, t, v in metrics[:1]:
        raw = orjson.dumps({"timestamp": ts, "value": repr(v), "name": p, "labels": {"instance": host}})
        counter = p.endswith(COUNTER_SUFFIXES)  # a counter's first sample gives no rate yet
        yield "prometheus", raw, [] if counter else [(host, p, v)]


@FUZZ
@given(st.lists(st.none() | st.booleans() | st.integers(-10 ** 40, 10 ** 40) | st.floats() | finite, min_size=1,
                max_size=3),
       st.sampled_from(["gauge", "derive", "counter", "absolute"]), st.booleans(),
       st.none() | st.floats() | st.integers(-5, 10 ** 30) | st.text(max_size=3))
def test_collectd_fast_path_decodes_a_known_series_exactly_as_the_checked_path(values, dstype, agent_rates, ts):
    """A series seen before takes the fast path (no name building or validation); whatever its values and time,
    it must give the samples, or the rejection, that the checked path gives."""
    dsnames = ["value"] if len(values) == 1 else [f"d{k}" for k in range(len(values))]

    def message(vals, time_):
        return as_json([{"values": vals, "dstypes": [dstype] * len(vals), "dsnames": dsnames, "time": time_,
                         "interval": 1.0, "host": "h", "plugin": "p", "plugin_instance": "", "type": "t",
                         "type_instance": ""}])

    options = FormatOptions(max_record_bytes=4096, agent_rates=agent_rates)
    warm = FORMATS["collectd"](options)
    warm.decode(message([1.0] * len(values), 1000.0))  # the series is known now
    raw = message(values, ts)
    assert outcome(lambda: warm.decode(raw)) == outcome(lambda: FORMATS["collectd"](options)._checked(raw))


def outcome(decode) -> object:
    try:
        return [tuple(s) for s in decode()]
    except DecodeError as exc:
        return exc.reason
