"""prometheus-kafka-adapter's JSON (Telefonica's adapter for Prometheus remote write), one sample per message:

    {"timestamp":"2026-11-30T12:00:00Z","value":"0.25","name":"node_load1",
     "labels":{"__name__":"node_load1","instance":"web-1:9100","job":"node"}}

entity = the label `input.entity_key` (default `instance`); channel = name plus the labels of `input.channel_tags`
(default: every label but the entity's, `__name__` and `job`), as `node_cpu_seconds_total{cpu=0,mode=user}`.
Values are text (`"NaN"` and `"+Inf"` are rejected as non_finite); the timestamp is RFC 3339 text (epoch numbers
are accepted too). Names ending in _total, _count, _sum or _bucket are counters, as are channels matching
`input.counters`: they become per-second rates, and a decrease is a counter reset.
"""

from __future__ import annotations

from datetime import datetime, timezone
from fnmatch import fnmatchcase

from .common import (DERIVE, GAUGE, Sample, channel_name, entity_name, epoch_seconds, finite_value, is_number,
                     json_type, labelled, need, parse_json)
from ...errors import DecodeError

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
SKIPPED_LABELS = ("__name__", "job")


class PrometheusDecoder:
    name = "prometheus"

    def __init__(self, options):
        self.limit = options.max_record_bytes
        self.entity_key = options.entity_key or "instance"
        self.channel_tags = options.channel_tags
        self.counters = options.counters

    def decode(self, raw: bytes) -> list[Sample]:
        obj = parse_json(raw, self.limit)
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"top level is a JSON {json_type(obj)}, expected an object")
        name, labels = need(obj, "name", ""), need(obj, "labels", "")
        if type(name) is not str or not name:
            raise DecodeError("bad_field", f"name: expected a non-empty string, got {json_type(name)}")
        if not isinstance(labels, dict) or not all(type(v) is str for v in labels.values()):
            raise DecodeError("bad_field", "labels: expected an object of strings")
        if self.entity_key not in labels:
            raise DecodeError("no_entity", f"labels.{self.entity_key}: the entity label is missing (input.entity_key)")
        entity = entity_name(labels[self.entity_key], f"labels.{self.entity_key}")
        ts = timestamp(need(obj, "timestamp", ""))
        value = sample_value(need(obj, "value", ""))
        channel = channel_name(labelled(name, labels, self.channel_tags, (self.entity_key,) + SKIPPED_LABELS), "name")
        counter = name.endswith(COUNTER_SUFFIXES) or any(fnmatchcase(channel, p) for p in self.counters)
        return [Sample(entity, channel, ts, value, DERIVE if counter else GAUGE)]


def timestamp(value: object) -> float:
    if is_number(value):
        return epoch_seconds(value, "timestamp")
    if type(value) is not str:
        raise DecodeError("bad_ts", f"timestamp: expected RFC 3339 text, got {json_type(value)}")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise DecodeError("bad_ts", f"timestamp: {value[:40]!r} is not RFC 3339 (2026-11-30T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return epoch_seconds(moment.timestamp(), "timestamp", unit=1.0)


def sample_value(value: object) -> float:
    """The adapter writes values as text (Go's strconv.FormatFloat); plain numbers are accepted too."""
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            raise DecodeError("wrong_type", f"value: {value[:40]!r} is not a number") from None
        return finite_value(number, f"value ({value[:20]!r})")
    return finite_value(value, "value")
