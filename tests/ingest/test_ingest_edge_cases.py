"""Ingest edge cases, each pinned by the behaviour a user sees: a far-future sample, a row left open
behind an older one, bad records in a streamdet-format history, and CSV time columns (units, bad cells, CRLF)."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from streamdet.config import load_config
from streamdet.data.timestamps import read_timed_csv
from streamdet.data.topic import rows_from_history
from streamdet.errors import DataError
from streamdet.pipeline.assemble import Assembler
from streamdet.pipeline.decode import REASONS
from streamdet.pipeline.formats import Sample

from tests.ingest.test_assemble import CHANNELS, Clock


def samples(entity: str, ts: float, offset: int, channels=CHANNELS):
    return [(Sample(entity, c, ts, 1.0 + k), ("metrics", 0, offset + k, 0)) for k, c in enumerate(channels)]


def test_a_far_future_sample_is_rejected_and_the_hosts_later_rows_still_come():
    """One sample timestamped in ms (read as s) or from a host with a wrong clock used to become the entity's newest
    time: every later sample of the host was then `late`, forever."""
    asm = Assembler(CHANNELS, interval_s=10.0)
    t0 = time.time() - 3600
    assert len(asm.add_many(samples("h", t0, 0)).rows) == 1
    future = [(Sample("h", "cpu", t0 * 1000, 5.0), ("metrics", 0, 3, 0)),
              (Sample("h", "mem", float("inf"), 5.0), ("metrics", 0, 4, 0))]
    rejected = asm.add_many(future).rejected
    assert [(s[2], e.reason) for s, e in rejected] == [(3, "bad_ts"), (4, "bad_ts")]
    assert all(e.reason in REASONS and "input.max_future_s=86400" in e.detail for _, e in rejected)
    later = asm.add_many(samples("h", t0 + 10, 5) + samples("h", t0 + 20, 8))
    assert not later.rejected and [r.ts for r in later.rows] == pytest.approx([t0 + 10, t0 + 20])


def test_a_row_whose_deadline_passed_behind_an_older_row_is_emitted_with_it():
    """Row 2 opens, then (out of order) row 1; row 2's clock deadline fires while row 1 still blocks it (rows leave in
    time order); row 1 then completes. Row 2 used to stay open for good once the host went quiet: no deadline left,
    never scored, and its first record held the partition's commit floor."""
    clock = Clock()
    asm = Assembler(CHANNELS, interval_s=1.0, clock=clock)
    asm.add_many(samples("h", 0.0, 0))
    clock.now = 10.0
    asm.add_many([(Sample("h", "cpu", 2.0, 1.0), ("metrics", 0, 3, 0))])
    clock.now = 10.5
    asm.add_many([(Sample("h", "cpu", 1.0, 1.0), ("metrics", 0, 4, 0))])
    clock.now = 11.0
    assert not asm.due().rows  # row 1 is not due yet and row 2 waits behind it
    clock.now = 11.2
    out = asm.add_many([(Sample("h", c, 1.0, 1.0), ("metrics", 0, 5 + k, 0)) for k, c in enumerate(("mem", "load"))])
    clock.now = 20.0
    out.extend(asm.due())
    assert [(r.ts, r.carried) for r in out.rows] == [(1.0, ()), (2.0, ("mem", "load"))]
    assert list(asm.pending_sources()) == [] and asm.seconds_until_due() is None


def record(entity, ts, a, b) -> bytes:
    return orjson.dumps({"entity": entity, "ts": ts, "metrics": {"a": a, "b": b}})


def test_bad_records_in_a_streamdet_history_are_counted_by_reason_and_train_on_finite_rows():
    """`train --from-topic` on streamdet-format records: a list entity or a non-finite time crashed it, a string
    value "nan" or a number beyond float32 went into the rows (the channel then looked constant and was left out)."""
    cfg = load_config(None, ["input.format=streamdet", "input.interval_s=1", "model.window=4"])
    good = [record("h", 1000.0 + i, float(i % 5), float(i % 3)) for i in range(20)]
    bad = [b'{"entity":["h"],"ts":1001.5,"metrics":{"a":1,"b":2}}', record("h", "1e400", 1, 2),
           record("h", "nan", 1, 2), record("h", -5, 1, 2), record("h", 1003.0, "nan", 2), record("h", 1004.0, 1e40, 2),
           record("h", 1005.0, True, 2), b'{"entity":"h","ts":1006,"metrics":[1,2]}', b'[1]', b'{"entity":"h"']
    history = good[:3] + bad + good[3:]
    got = rows_from_history(cfg, [[(raw, ("metrics", 0, i, 0)) for i, raw in enumerate(history)]])
    assert dict(got.rejected) == {"bad_entity": 1, "bad_ts": 3, "wrong_type": 3, "non_finite": 1, "not_object": 1,
                                  "not_json": 1}
    assert set(got.rejected) <= REASONS and got.channels == ["a", "b"]
    [series] = got.series
    assert np.isfinite(series.train).all() and len(series.train) == 20


def write(path, text: str):
    path.write_bytes(text.encode())
    return path


def test_epoch_times_in_ms_us_or_ns_become_seconds(tmp_path):
    """Exports often carry epoch milliseconds (or ns): read as seconds they were in the year 57000, and every replayed
    or backtested record was rejected as in the future."""
    for scale in (1, 1000, 10 ** 6, 10 ** 9):
        path = write(tmp_path / f"t{scale}.csv", "time,cpu\n" + "".join(f"{(1_796_000_000 + 60 * i) * scale},{i}\n"
                                                                     for i in range(3)))
        _, _, ts = read_timed_csv(path)
        assert ts.tolist() == [1_796_000_000.0, 1_796_000_060.0, 1_796_000_120.0], scale


def test_a_time_cell_that_is_not_a_finite_non_negative_number_is_named(tmp_path):
    for cell in ("nan", "inf", "-5"):
        path = write(tmp_path / "bad.csv", f"time,cpu\n1796000000,1\n{cell},2\n")
        with pytest.raises(DataError, match=rf"bad.csv: line 3, column 'time': '{cell}' is not a finite, "
                                            "non-negative time"):
            read_timed_csv(path)


def test_crlf_files_with_the_time_column_not_first_are_read(tmp_path):
    """Windows line ends: moving the time column to the front left a carriage return inside each line, which the
    numeric parser split into two lines ("line 2 has 2 columns")."""
    path = write(tmp_path / "win.csv", "cpu,mem,time\r\n1,2,2026-11-30T12:00:00+01:00\r\n3,4,2026-11-30T12:01:00Z\r\n")
    channels, values, ts = read_timed_csv(path)
    assert channels == ["cpu", "mem"] and values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert ts.tolist() == [1_796_036_400.0, 1_796_040_060.0]


def test_streamdet_record_errors_use_json_type_names_and_plain_numbers():
    """Dead-letter details are read by people: `null`, not Python's `NoneType`; `1e+39`, not `np.float64(1e+39)`."""
    from streamdet.pipeline.decode import Decoder

    got = Decoder(["a", "b"], 65536).decode([b'null', b'"x"', b'{"entity":"h","ts":1,"values":[1e39,2]}',
                                              b'{"entity":"h","ts":1,"metrics":{"a":1,"b":-1e39}}'])
    assert [e.detail for _, e in got.rejected] == [
        "top level is a JSON null, expected an object", "top level is a JSON string, expected an object",
        "values[0] (a): 1e+39 is not a finite float32", "metrics.b: -1e+39 is not a finite float32"]
