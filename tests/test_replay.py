"""Replay encoding and pacing (the Kafka path is covered by the integration tests)."""

import numpy as np
import orjson

from streamdet.replay import encode_record, interleaved_rows, replay


def test_records_round_trip_as_design_json():
    raw = encode_record("machine-1-2", 12.5, np.array([0.25, 1.0], dtype=np.float32))
    assert orjson.loads(raw) == {"entity": "machine-1-2", "ts": 12.5, "values": [0.25, 1.0]}


def test_rows_interleave_and_respect_limit():
    arrays = {"a": np.zeros((3, 1)), "b": np.ones((1, 1))}
    order = [(e, i) for e, i, _ in interleaved_rows(arrays)]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    assert [(e, i) for e, i, _ in interleaved_rows(arrays, limit=2)] == [("a", 0), ("b", 0), ("a", 1)]


def test_replay_paces_and_maps_timestamps_back_to_rows():
    now = [1000.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    sent = []
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.arange(6, dtype=np.float32).reshape(3, 2)}
    report = replay(arrays, lambda k, v: sent.append((k, orjson.loads(v))), rate=2.0, clock=lambda: now[0],
                    sleep=sleep)
    assert report.records == 6 and len(sent) == 6
    assert sent[0][0] == b"a" and sent[0][1]["values"] == [0.0, 1.0]
    assert abs(sum(slept) - 2.5) < 1e-9  # 6 records at 2/s: the last leaves 2.5 s after the first
    ts_b = [v["ts"] for k, v in sent if k == b"b"]
    assert [report.row_of("b", t) for t in ts_b] == [0, 1, 2]
