"""Hostile input never crashes anything: property-based on decode + windows, and 10,000 bad records through Kafka."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.errors import DecodeError
from streamdet.pipeline.decode import REASONS, Decoder
from streamdet.pipeline.windows import WindowStore
from tests.conftest import TINY_CHANNELS, wait_until
from tests.integration.helpers import DaemonProcess, read_topic

from .helpers import produce, scenario_records

C = 4
CHANNELS = ("cpu", "mem", "disk", "net")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=30)
records = st.fixed_dictionaries({}, optional={
    "entity": json_values | st.text(min_size=1, max_size=30),
    "ts": json_values | st.floats(min_value=-1e12, max_value=1e12) | st.integers(-10**15, 10**15),
    "values": json_values | st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**40, 10**40),
                                     min_size=C, max_size=C),
    "metrics": json_values | st.dictionaries(st.sampled_from(CHANNELS + ("x",)), st.floats(allow_nan=False)),
})
def as_json(value) -> bytes:
    return json.dumps(value).encode()  # the stdlib writes what orjson refuses (huge ints, Infinity): good fuzz


payloads = records.map(as_json) | st.binary(max_size=300) | json_values.map(as_json)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=20))
def test_decode_and_windows_raise_only_decode_errors_with_known_reasons(batch):
    decoder = Decoder(CHANNELS, 4096, max_future_s=86_400)
    store = WindowStore(8, C, 3, max_entities=5, allowed_lateness_s=10.0, entity_idle_s=1e9)
    decoded = decoder.decode(batch)
    assert decoded.values.shape == (len(decoded.index), C) and np.isfinite(decoded.values).all()
    pushed = store.push(decoded.entities, decoded.ts, decoded.values, [("t", 0, i) for i in decoded.index])
    rejected = [exc for _, exc in decoded.rejected + pushed.rejected]
    assert all(isinstance(exc, DecodeError) and exc.reason in REASONS and exc.detail for exc in rejected)
    assert len(decoded.index) + len(decoded.rejected) == len(batch) and len(store) <= 5


def bad_records(now: float, n: int) -> list[tuple[str, bytes, str]]:
    """n malformed records (key, payload, expected reason), cycling through every kind of hostility."""
    w = TINY_CHANNELS  # the bundle's width
    good = [0.1] * w
    kinds = [
        ("bad", lambda i: b"\xff\xfe\xfa" + bytes([i % 256]) * 5, "not_utf8"),
        ("bad", lambda i: b'{"entity":"rig-a","ts":1,"values":[' + b"0," * 40_000 + b"0]}", "too_large"),
        ("bad", lambda i: b"[" * 3000 + b"]" * 3000, "not_json"),
        ("bad", lambda i: orjson.dumps({"entity": "rig-a", "ts": "yesterday", "values": good}), "bad_ts"),
        ("bad", lambda i: orjson.dumps({"entity": "rig-a", "ts": now, "values": ["x"] * w}), "wrong_type"),
        ("bad", lambda i: orjson.dumps({"entity": "rig-a", "ts": now, "values": good[: i % w]}), "wrong_width"),
        ("bad", lambda i: ('{"entity":"rig-a","ts":%f,"values":[1e39%s]}' % (now, ",0" * (w - 1))).encode(),
         "non_finite"),
        ("bad", lambda i: orjson.dumps({"entity": "rig-a", "ts": now + 10 * 86_400, "values": good}), "bad_ts"),
        ("rig-b", lambda i: orjson.dumps({"entity": "rig-b", "ts": 1000.0 + i, "values": good}), "late"),
        ("bad", lambda i: orjson.dumps({"entity": f"intruder-{i}", "ts": now, "values": good}), "entity_cap"),
        ("bad", lambda i: orjson.dumps([1, 2, 3]), "not_object"),
        ("bad", lambda i: orjson.dumps({"ts": now, "values": good}), "no_entity"),
    ]
    out = []
    for i in range(n):
        key, make, reason = kinds[i % len(kinds)]
        if reason == "too_large" and i % (len(kinds) * 20) != 1:  # a few 80 KB payloads are enough to prove it
            key, make, reason = kinds[2]
        out.append((key, make(i), reason))
    return out


def near_the_size_limit() -> list[tuple[str, bytes, str]]:
    """Two records near the broker's message limit: a dead letter holding either whole would be over it (JSON
    escaping, base64), which no producer can send; the daemon stopped on them, and restarted into them again."""
    quoted = b'{"entity":"rig-a","ts":1,"note":"' + b'\\"' * 450_000 + b'"}'  # 900 KB, escaped again in a letter
    binary = b"\xff" + bytes(range(256)) * 3_500  # 896 KB, not UTF-8: base64 makes it 1.2 MB
    return [("bad", quoted, "too_large"), ("bad", binary, "too_large")]


@pytest.mark.kafka
def test_ten_thousand_bad_records_all_in_the_dlq_and_every_valid_record_scored(broker, tiny_bundle, names, tmp_path):
    from tests.reliability.helpers import rss_mib

    valid = scenario_records()  # 3 entities x 460 rows, timestamps T0 + row
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log",
                           extra=("input.max_entities=3", "input.allowed_lateness_s=300", "kafka.state_topic=''"))
    try:
        daemon.wait_ready()
        first, rest = valid[:300], valid[300:]
        produce(broker.bootstrap, names["metrics"], first)  # the three real entities take the three slots
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"]) >= 300, 30,
                   "the first valid records")
        rss_before = rss_mib(daemon.proc.pid)
        bad = bad_records(time.time(), 10_000) + near_the_size_limit()
        mixed, j = [], 0
        for i, item in enumerate(bad):  # valid traffic interleaved with the hostile records
            mixed.append((item[0], item[1]))
            if i % 9 == 0 and j < len(rest):
                mixed.append(rest[j])
                j += 1
        mixed += rest[j:]
        produce(broker.bootstrap, names["metrics"], mixed)
        total = len(valid) + len(bad)
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"]) >= total, 60,
                   "every record consumed")
        letters = read_topic(broker.bootstrap, names["dlq"], lambda m: len(m) >= len(bad), 60)
        assert daemon.proc.poll() is None, "the daemon crashed"
        rss_peak = rss_mib(daemon.proc.pid)
        assert Counter(m["reason"] for m in letters) == Counter(reason for _, _, reason in bad)
        assert all(m["detail"] and isinstance(m["source"]["offset"], int) for m in letters)
        assert len({(m["source"]["partition"], m["source"]["offset"]) for m in letters}) == len(bad)
        cut = [m for m in letters if m["payload_bytes"] > 500_000]  # the two near the limit, cut to be sendable
        assert sorted(m["payload_bytes"] for m in cut) == sorted(len(raw) for _, raw, _ in near_the_size_limit())
        assert all(m["payload_truncated"] for m in cut)
        quoted = near_the_size_limit()[0][1].decode()
        assert any(m.get("payload") and quoted.startswith(m["payload"]) for m in cut)
        code, _ = daemon.terminate(20)
        from tests.integration.helpers import final_totals

        totals = final_totals(daemon)
        assert code == 0 and totals["scored"] == len(valid)  # drained at shutdown: every valid record scored
        assert rss_peak < rss_before + 150, (rss_before, rss_peak)  # bounded: nothing of the junk is kept
    finally:
        daemon.close()


def test_a_dead_letter_cut_inside_a_character_keeps_the_text_and_a_long_detail_is_cut():
    from streamdet.serve.delivery import DLQ_DETAIL_CHARS, DLQ_PAYLOAD_BYTES, dead_letter
    from streamdet.types import Reject, Source

    source = Source("metrics", 0, 7, 0)
    raw = b"a" * (DLQ_PAYLOAD_BYTES - 1) + "é".encode() * 10  # the cut falls between é's two bytes
    letter = orjson.loads(dead_letter(Reject(raw, source, "too_large", "x" * 5_000)))
    assert letter["payload"] == "a" * (DLQ_PAYLOAD_BYTES - 1) and letter["payload_truncated"]
    assert letter["payload_bytes"] == len(raw) and len(letter["detail"]) == DLQ_DETAIL_CHARS + 3
    small = orjson.loads(dead_letter(Reject(b"\xff\x00", source, "not_utf8", "bad")))
    assert small["payload_base64"] == "/wA=" and not small["payload_truncated"] and small["payload_bytes"] == 2
