"""Telegraf's Kafka output with `data_format = "json"`: one metric, or a batch `{"metrics": [...]}`.

    {"name":"cpu","tags":{"host":"web-1","cpu":"cpu-total"},"fields":{"usage_user":3.2,"usage_idle":95.1},
     "timestamp":1796032907}

entity = the tag `input.entity_key` (default `host`); channel = name/field plus the tags of `input.channel_tags`
(default: every tag but the entity's), as `cpu/usage_user{cpu=cpu-total}`. The timestamp's unit (Telegraf's
`json_timestamp_units`, 1s by default) is told from its magnitude. Fields that are strings are not metrics and are
skipped (counted in `skipped_fields`); booleans count as 0/1. Fields matching `input.counters` are running totals
(e.g. `net/bytes_recv*`) and become per-second rates.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from .common import (DERIVE, GAUGE, Sample, channel_name, entity_name, epoch_seconds, finite_value, json_type, labelled,
                     need, parse_json)
from ...errors import DecodeError


class TelegrafDecoder:
    name = "telegraf"

    def __init__(self, options):
        self.limit = options.max_record_bytes
        self.entity_key = options.entity_key or "host"
        self.channel_tags = options.channel_tags
        self.counters = options.counters
        self.skipped_fields = 0

    def decode(self, raw: bytes) -> list[Sample]:
        obj = parse_json(raw, self.limit)
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"top level is a JSON {json_type(obj)}, expected an object")
        if "metrics" in obj and "name" not in obj:
            metrics = obj["metrics"]
            if not isinstance(metrics, list):
                raise DecodeError("bad_field", f"metrics: expected a list, got {json_type(metrics)}")
            out: list[Sample] = []
            for i, metric in enumerate(metrics):
                if not isinstance(metric, dict):
                    raise DecodeError("not_object", f"metrics[{i}]: expected an object, got {json_type(metric)}")
                out.extend(self._metric(metric, f"metrics[{i}]."))
            return out
        return self._metric(obj, "")

    def _metric(self, obj: dict, where: str) -> list[Sample]:
        name, tags, fields = need(obj, "name", where), need(obj, "tags", where), need(obj, "fields", where)
        if type(name) is not str or not name:
            raise DecodeError("bad_field", f"{where}name: expected a non-empty string, got {json_type(name)}")
        if not isinstance(tags, dict) or not all(type(v) is str for v in tags.values()):
            raise DecodeError("bad_field", f"{where}tags: expected an object of strings")
        if not isinstance(fields, dict):
            raise DecodeError("bad_field", f"{where}fields: expected an object, got {json_type(fields)}")
        if self.entity_key not in tags:
            raise DecodeError("no_entity", f"{where}tags.{self.entity_key}: the entity tag is missing "
                                           f"(input.entity_key)")
        entity = entity_name(tags[self.entity_key], f"{where}tags.{self.entity_key}")
        ts = epoch_seconds(need(obj, "timestamp", where), f"{where}timestamp")
        return metric_samples(self, entity, name, tags, fields, ts, where + "fields.")


def metric_samples(decoder, entity: str, name: str, tags: dict, fields: dict, ts: float, where: str) -> list[Sample]:
    """The samples of one Telegraf/Influx metric (shared by both decoders: same mapping, different syntax)."""
    out = []
    for field, value in fields.items():
        if type(value) is str:
            decoder.skipped_fields += 1
            continue
        number = finite_value(float(value) if type(value) is bool else value, f"{where}{field}")
        channel = channel_name(labelled(f"{name}/{field}", tags, decoder.channel_tags, (decoder.entity_key,)),
                               f"{where}{field}")
        kind = DERIVE if any(fnmatchcase(channel, p) for p in decoder.counters) else GAUGE
        out.append(Sample(entity, channel, ts, number, kind))
    return out
