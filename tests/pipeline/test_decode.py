from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from streamdet.errors import DecodeError
from streamdet.pipeline.decode import REASONS, Decoder

CHANNELS = ("cpu", "mem", "disk")


@pytest.fixture
def decoder():
    return Decoder(CHANNELS, max_record_bytes=512)


def decode_one(decoder: Decoder, raw: bytes):
    """A single record is a batch of one: -> (entity, ts, values float32 [C]), or its DecodeError raised."""
    batch = decoder.decode([raw])
    if batch.rejected:
        raise batch.rejected[0][1]
    return SimpleNamespace(entity=batch.entities[0], ts=batch.ts[0], values=batch.values[0])


def reject(decoder, raw) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_one(decoder, raw if isinstance(raw, bytes) else orjson.dumps(raw))
    assert info.value.reason in REASONS
    return info.value


def test_values_form(decoder):
    rec = decode_one(decoder, b'{"entity": "m-1", "ts": 1732262400.5, "values": [0.5, 1, -2.25]}')
    assert rec.entity == "m-1" and rec.ts == 1732262400.5
    assert rec.values.dtype == np.float32 and rec.values.tolist() == [0.5, 1.0, -2.25]


def test_metrics_form_orders_by_channel_name(decoder):
    rec = decode_one(decoder, orjson.dumps({"entity": "m", "ts": 3, "metrics": {"disk": 3.0, "cpu": 1.0, "mem": 2.0}}))
    assert rec.values.tolist() == [1.0, 2.0, 3.0] and rec.ts == 3.0


BAD_RECORDS = [
    (b"\xff\xfe{}", "not_utf8", ""),
    (b'{"entity": "m", ', "not_json", ""),
    (b'{"entity":"m","ts":1,"values":[NaN,1,2]}', "not_json", ""),
    (b"[1, 2, 3]", "not_object", "list"),
    ({"ts": 1, "values": [1, 2, 3]}, "no_entity", "entity"),
    ({"entity": 7, "ts": 1, "values": [1, 2, 3]}, "bad_entity", "entity"),
    ({"entity": ["m"], "ts": 1, "values": [1, 2, 3]}, "bad_entity", "entity"),
    ({"entity": "", "ts": 1, "values": [1, 2, 3]}, "bad_entity", "entity"),
    ({"entity": "a\nb", "ts": 1, "values": [1, 2, 3]}, "bad_entity", "entity"),
    ({"entity": "m", "values": [1, 2, 3]}, "no_ts", "ts"),
    ({"entity": "m", "ts": "2024-01-01", "values": [1, 2, 3]}, "bad_ts", "ts"),
    ({"entity": "m", "ts": True, "values": [1, 2, 3]}, "bad_ts", "ts"),
    ({"entity": "m", "ts": -5, "values": [1, 2, 3]}, "bad_ts", "ts"),
    ({"entity": "m", "ts": 1}, "no_values", "values"),
    ({"entity": "m", "ts": 1, "values": [1, 2, 3], "metrics": {}}, "both_forms", "metrics"),
    ({"entity": "m", "ts": 1, "values": [1, 2]}, "wrong_width", "2 entries"),
    ({"entity": "m", "ts": 1, "values": {"cpu": 1}}, "wrong_type", "values"),
    ({"entity": "m", "ts": 1, "values": [1, "2", 3]}, "wrong_type", "values[1] (mem)"),
    ({"entity": "m", "ts": 1, "values": [1, 2, None]}, "wrong_type", "values[2] (disk)"),
    ({"entity": "m", "ts": 1, "values": [1, False, 3]}, "wrong_type", "values[1]"),
    ({"entity": "m", "ts": 1, "values": [1, 2, True]}, "wrong_type", "values[2]"),
    ({"entity": "m", "ts": 1, "values": [1, [2], 3]}, "wrong_type", "values[1]"),
    ({"entity": "m", "ts": 1, "values": "abc"}, "wrong_type", "values"),
    ({"entity": "m", "ts": 1, "values": [1, 2, 1e300]}, "non_finite", "values[2]"),
    ({"entity": "m", "ts": 1, "metrics": [1, 2, 3]}, "wrong_type", "metrics"),
    ({"entity": "m", "ts": 1, "metrics": {"cpu": 1, "mem": 2}}, "missing_channel", "metrics.disk"),
    ({"entity": "m", "ts": 1, "metrics": {"cpu": 1, "mem": 2, "gpu": 3}}, "unknown_channel", "metrics.gpu"),
    ({"entity": "m", "ts": 1, "metrics": {"cpu": 1, "mem": "x", "disk": 3}}, "wrong_type", "metrics.mem"),
    ({"entity": "m", "ts": 1, "metrics": {"cpu": 1, "mem": 2, "disk": -1e39}}, "non_finite", "metrics.disk"),
]


@pytest.mark.parametrize("raw, reason, where", BAD_RECORDS)
def test_every_reason_names_the_field(decoder, raw, reason, where):
    err = reject(decoder, raw)
    assert err.reason == reason
    assert where in err.detail


def test_too_large_is_checked_before_parsing(decoder):
    raw = orjson.dumps({"entity": "m", "ts": 1, "values": [1, 2, 3], "pad": "x" * 600})
    err = reject(decoder, raw)
    assert err.reason == "too_large" and str(len(raw)) in err.detail and "max_record_bytes" in err.detail


def test_a_batch_keeps_input_positions_of_usable_and_rejected_records(decoder):
    raws = [orjson.dumps({"entity": "a", "ts": 1, "values": [1, 2, 3]}),
            b"not json",
            orjson.dumps({"entity": "b", "ts": 2, "values": [1, 2, 1e300]}),  # range checked for the whole batch
            orjson.dumps({"entity": "c", "ts": 3, "metrics": {"cpu": 4, "mem": 5, "disk": 6}}),
            orjson.dumps({"entity": "d", "ts": 4, "metrics": {"cpu": 1, "mem": -1e39, "disk": 6}})]
    batch = decoder.decode(raws)
    assert batch.index == [0, 3] and batch.entities == ["a", "c"] and batch.ts == [1.0, 3.0]
    assert batch.values.dtype == np.float32 and batch.values.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert [(i, e.reason) for i, e in batch.rejected] == [(1, "not_json"), (2, "non_finite"), (4, "non_finite")]
    assert "values[2] (disk)" in batch.rejected[1][1].detail and "metrics.mem" in batch.rejected[2][1].detail


def test_a_batch_of_nothing_usable_is_an_empty_matrix(decoder):
    batch = decoder.decode([b"{}", b"[]"])
    assert batch.values.shape == (0, 3) and len(batch.rejected) == 2


def _good(i: int) -> bytes:
    return orjson.dumps({"entity": f"m-{i % 3}", "ts": 1000 + i, "values": [i, i / 2, -i * 1e-3]})


def test_a_batch_of_good_records_decodes_as_each_record_alone(decoder):
    raws = [_good(i) for i in range(50)]
    batch = decoder.decode(raws)
    alone = [decode_one(decoder, raw) for raw in raws]
    assert batch.index == list(range(50)) and not batch.rejected
    assert batch.entities == [r.entity for r in alone] and batch.ts == [r.ts for r in alone]
    assert batch.values.dtype == np.float32
    assert batch.values.tolist() == [r.values.tolist() for r in alone]


@pytest.mark.parametrize("raw, reason, where", BAD_RECORDS)
def test_one_bad_record_among_good_ones_is_rejected_alone(decoder, raw, reason, where):
    """The batch path checks whole columns at once; a single bad record must still be named, and only it."""
    bad = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    raws = [_good(0), _good(1), bad, _good(3)]
    batch = decoder.decode(raws)
    assert [(i, e.reason) for i, e in batch.rejected] == [(2, reason)] and where in batch.rejected[0][1].detail
    assert batch.index == [0, 1, 3] and batch.entities == ["m-0", "m-1", "m-0"]
    assert batch.values.tolist() == [decode_one(decoder, raws[i]).values.tolist() for i in (0, 1, 3)]


def test_a_future_timestamp_is_rejected_in_a_batch():
    decoder = Decoder(CHANNELS, max_record_bytes=512, max_future_s=60)
    future = orjson.dumps({"entity": "m", "ts": 4e9, "values": [1, 2, 3]})
    batch = decoder.decode([_good(0), future])
    assert batch.index == [0] and [(i, e.reason) for i, e in batch.rejected] == [(1, "bad_ts")]


def test_words_that_look_like_booleans_do_not_reject_a_record(decoder):
    """Booleans are found by scanning the bytes for `true`/`false`; a record that merely contains those letters (in
    its entity name) is checked one by one and accepted."""
    raws = [_good(0), orjson.dumps({"entity": "truenas-falsetto", "ts": 5, "values": [1, 2, 3]}), _good(2)]
    batch = decoder.decode(raws)
    assert not batch.rejected and batch.index == [0, 1, 2]
    assert batch.entities == ["m-0", "truenas-falsetto", "m-2"]
    assert batch.values.tolist() == [decode_one(decoder, raw).values.tolist() for raw in raws]


def test_every_bad_record_of_a_mixed_batch_is_rejected_with_its_own_reason():
    """The column checks must not stop at the first kind of failure they meet (a timestamp of the wrong type must not
    hide a timestamp from the future in the same batch)."""
    decoder = Decoder(CHANNELS, max_record_bytes=512, max_future_s=60)
    bad = [raw if isinstance(raw, bytes) else orjson.dumps(raw) for raw, _, _ in BAD_RECORDS]
    future = orjson.dumps({"entity": "m", "ts": 4e9, "values": [1, 2, 3]})
    raws = [_good(0)] + bad + [future, _good(1)]
    batch = decoder.decode(raws)
    assert [(i, e.reason) for i, e in batch.rejected] == \
        [(k + 1, reason) for k, (_, reason, _) in enumerate(BAD_RECORDS)] + [(len(raws) - 2, "bad_ts")]
    assert batch.index == [0, len(raws) - 1]
