"""engine.Pipeline on per-sample messages: the rows it assembles score exactly as the same rows sent as records;
rows being assembled are pending (commit floor) and travel in the entity's checkpoint."""

from __future__ import annotations

import orjson

from streamdet.bundle import load_bundle
from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.serve.state import decode_checkpoint, encode_checkpoint
from streamdet.types import Source
from tests.conftest import SMD_CONFIG, tiny_overrides
from tests.reliability.helpers import EXTRA, reference_alerts, scenario_records

from .samples import SAMPLE_EXTRA, sample_messages


def pipeline(bundle_path, *extra: str) -> Pipeline:
    cfg = load_config(SMD_CONFIG, tiny_overrides(bundle_path) + list(EXTRA) + list(SAMPLE_EXTRA) + list(extra))
    return Pipeline(PipelineSettings.of(cfg), load_bundle(bundle_path), overlap=False)


def alerts_of(events) -> dict:
    messages = [orjson.loads(orjson.dumps(e.to_message())) for e in events]
    return {(m["alert_id"], m["status"]): (m["start_ts"], m["ts"], round(m["score"], 4)) for m in messages}


def test_assembled_messages_alert_exactly_as_the_same_rows_sent_as_records(tiny_bundle):
    want = reference_alerts(tiny_bundle, scenario_records())
    assert any(status == "firing" for _, status in want)
    p = pipeline(tiny_bundle)
    messages = sample_messages(load_bundle(tiny_bundle).channels)
    events, chunk = [], 5000
    for lo in range(0, len(messages), chunk):  # polls cut rows anywhere: assembly spans them
        result = p.process((value, Source("metrics", 0, lo + k, 0)) for k, (_, value)
                           in enumerate(messages[lo:lo + chunk]))
        assert not result.rejected, result.rejected[:3]
        events += result.alerts
    events += p.flush_batches().alerts
    got = alerts_of(events)
    assert got.keys() == want.keys()
    assert all(got[k][:2] == (want[k]["start_ts"], want[k]["ts"]) for k in got)


def test_open_rows_hold_the_commit_floor_and_travel_in_the_checkpoint(tiny_bundle):
    channels = load_bundle(tiny_bundle).channels
    per_row = len(channels) * 3  # messages per row of the three entities
    messages = sample_messages(channels)[:per_row * 20 + 5]  # 20 whole rows per entity, then part of one
    whole = pipeline(tiny_bundle)
    whole.process((v, Source("metrics", 0, k, 0)) for k, (_, v) in enumerate(messages))
    first = pipeline(tiny_bundle)
    cut = per_row * 10 + len(channels) + 3  # inside the second entity's row 10
    first.process((v, Source("metrics", 0, k, 0)) for k, (_, v) in enumerate(messages[:cut]))
    pending = [s.offset for s in first.intake.pending_sources()]
    assert pending == [per_row * 10 + len(channels)]  # the open row's first record
    assert pending[0] in {s.offset for s in first.pending_sources()}  # ... holds the commit floor
    second = pipeline(tiny_bundle)
    for entity in ("rig-a", "rig-b", "rig-c"):
        assert first.holds(entity)
        raw = encode_checkpoint(entity, first.state_dict(entity), Source("metrics", 0, cut - 1, 0), "sha")
        second.load_state(entity, decode_checkpoint(raw)["state"])
    assert [s.offset for s in second.intake.pending_sources()] == pending
    rest = second.process((v, Source("metrics", 0, cut + k, 0)) for k, (_, v) in enumerate(messages[cut:]))
    assert not rest.rejected
    assert sorted(s.offset for s in second.pending_sources()) == sorted(s.offset for s in whole.pending_sources())
