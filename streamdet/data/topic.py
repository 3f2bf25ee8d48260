"""Training data from the metrics topic's history (`streamdet train --from-topic [--since DURATION] [--until WHEN]`).

The history an operator has is the stream itself, in whatever format the agents write. io/history.py reads the topic
from the start (or from `--since` ago) up to the end offsets it saw when it started (or to `--until`); this module
decodes every message with the configured input format, assembles rows per entity with the daemon's own assembler
(pipeline/assemble.py: same interval, carry-forward and gap rules), and returns one Series per entity whose rows are
all train data; the trainer's validation tail is the last `train.val_fraction` of each entity's rows, so the split is
by time.

The channel list is what the fleet actually sends: channels present on fewer than `train.min_channel_share` of the
entities, matching `train.exclude_channels`, or constant over the training rows, are left out, and the lists are
logged (and recorded in the bundle).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..errors import DataError, DecodeError
from ..pipeline.assemble import Assembler
from ..pipeline.formats import FormatDecoder, FormatOptions, Sample
from ..pipeline.formats.common import entity_name, epoch_seconds, finite_value, json_type, need, parse_json
from .series import Series

log = logging.getLogger(__name__)

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1d', '1w' or plain seconds."""
    match = DURATION.match(text)
    if not match:
        raise DataError(f"--since {text!r}: expected a duration such as 90s, 10m, 2h or 1d")
    return float(match.group(1)) * UNIT_S[match.group(2)]


def parse_moment(text: str, now: float) -> float:
    """--until: an ISO 8601 time (UTC unless it says otherwise) or a duration before `now`; epoch seconds."""
    if DURATION.match(text):
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise DataError(f"--until {text!r}: expected an ISO 8601 time (2026-12-02T16:08:30Z) or a duration before "
                        "now (90s, 10m, 2h, 1d)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class TopicRows:
    """What the history gave: a Series per entity and the choices made on the way (for the train log)."""

    series: list[Series]
    channels: list[str]
    rare: list[str] = field(default_factory=list)  # present on too few entities
    excluded: list[str] = field(default_factory=list)  # matching train.exclude_channels
    constant: list[str] = field(default_factory=list)
    messages: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> messages (decoding) or samples (assembly: late, bad_ts)
    dropped_rows: int = 0  # rows with a channel missing beyond carry-forward
    short: list[str] = field(default_factory=list)  # entities with too few rows for a window

    def summary(self) -> dict:
        return {"messages": self.messages, "entities": [s.entity for s in self.series], "channels": len(self.channels),
                "rare_channels": self.rare, "excluded_channels": self.excluded, "constant_channels": self.constant, "rejected": dict(self.rejected),
                "dropped_rows": self.dropped_rows, "short_entities": self.short}


def streamdet_samples(raw: bytes, limit: int = 65536) -> list[Sample]:
    """Today's record format as samples: `metrics` by name, `values` by position (channels 0, 1, ...). Checked as
    the daemon checks a record (entity, time in seconds, numbers within float32's range): a bad record is counted by
    reason instead of crashing the training or putting NaN or inf into its rows."""
    obj = parse_json(raw, limit)
    if not isinstance(obj, dict):
        raise DecodeError("not_object", f"top level is a JSON {json_type(obj)}, expected an object")
    entity = entity_name(need(obj, "entity", ""), "entity")
    ts = epoch_seconds(need(obj, "ts", ""), "ts", unit=1.0)
    if "metrics" in obj and "values" in obj:
        raise DecodeError("both_forms", "record has both 'values' and 'metrics'; send one")
    if "metrics" in obj:
        metrics = obj["metrics"]
        if type(metrics) is not dict:
            raise DecodeError("wrong_type", f"metrics: expected a mapping, got {json_type(metrics)}")
        cells = [(name, v, f"metrics.{name}") for name, v in metrics.items()]
    else:
        values = obj.get("values")
        if type(values) is not list:
            raise DecodeError("no_values" if values is None else "wrong_type",
                              f"values: expected a list (or 'metrics', a mapping), got {json_type(values)}")
        cells = [(str(i), v, f"values[{i}]") for i, v in enumerate(values)]
    return [Sample(entity, name, ts, finite_value(v, where)) for name, v, where in cells]


def rows_from_history(cfg, batches: Iterable[list[tuple[bytes, tuple]]]) -> TopicRows:
    """Decode, choose channels, assemble, drop constant channels: one train-only Series per entity."""
    samples, messages, rejected = _decode_all(cfg, batches)
    channels, rare = _fleet_channels(samples, cfg.train.min_channel_share)
    excluded = [c for c in channels if any(fnmatchcase(c, p) for p in cfg.train.exclude_channels)]
    channels = [c for c in channels if c not in set(excluded)]
    result = TopicRows([], channels, rare=rare, excluded=excluded, messages=messages, rejected=rejected)
    if not channels:
        raise DataError(f"{cfg.kafka.metrics_topic}: no channel is sent by {cfg.train.min_channel_share:.0%} of the "
                        f"entities ({messages} messages read, rejected: {dict(rejected) or 'none'})")
    rows = _assemble(cfg, channels, samples, result)
    keep = _varying(rows, channels, result)
    for entity, matrix in rows.items():
        ts, values = matrix
        if len(values) < 2 * cfg.model.window:
            result.short.append(entity)
            continue
        result.series.append(Series(entity, result.channels, values[:, keep], np.zeros((0, len(result.channels)),
                                                                                       np.float32),
                                    np.zeros(0, np.int8), train_timestamps=ts))
    return result


def _decode_all(cfg, batches) -> tuple[list[tuple[Sample, tuple]], int, Counter]:
    """(samples with their source, messages read, rejected messages per reason)."""
    fmt = cfg.input.format
    decoder = None if fmt == "streamdet" else FormatDecoder(fmt, FormatOptions.from_input(cfg.input))
    samples, messages, rejected = [], 0, Counter()
    for batch in batches:
        for raw, source in batch:
            messages += 1
            try:
                got = decoder.decode(raw) if decoder is not None else streamdet_samples(raw, cfg.input.max_record_bytes)
            except DecodeError as exc:
                rejected[exc.reason] += 1
                continue
            samples.extend((sample, source) for sample in got)
    return samples, messages, rejected


def _fleet_channels(samples: list, min_share: float) -> tuple[list[str], list[str]]:
    """(channels on at least min_share of the entities, sorted; the others)."""
    entities_of: dict[str, set] = {}
    for sample, _ in samples:
        entities_of.setdefault(sample.channel, set()).add(sample.entity)
    n_entities = len({sample.entity for sample, _ in samples})
    need = max(1, math.ceil(min_share * n_entities))
    kept = sorted(c for c, e in entities_of.items() if len(e) >= need)
    return kept, sorted(set(entities_of) - set(kept))


def _assemble(cfg, channels: list[str], samples: list, result: TopicRows) -> dict[str, tuple]:
    """entity -> (ts [T], values [T, C]) in time order, from the daemon's assembler on a clock that never moves."""
    i = cfg.input
    assembler = Assembler(channels, i.interval_s, i.carry_forward, i.allowed_lateness_s, max_entities=10 ** 9,
                          max_channels=i.max_channels, entity_idle_s=math.inf, clock=lambda: 0.0,
                          max_future_s=i.max_future_s)
    out = assembler.add_many((s, None) for s, _ in samples)  # no owner partition: history may predate a re-keying
    out.extend(assembler.drain())
    result.dropped_rows = len(out.dropped)
    for _, exc in out.rejected:
        result.rejected[exc.reason] += 1
    per_entity: dict[str, list] = {}
    for row in out.rows:
        per_entity.setdefault(row.entity, []).append(row)
    return {e: (np.array([r.ts for r in rs]), np.stack([r.values for r in rs])) for e, rs in per_entity.items()}


def _varying(rows: dict[str, tuple], channels: list[str], result: TopicRows) -> np.ndarray:
    """Column indices of channels that vary over the training rows; the constant ones go to result.constant."""
    if not rows:
        return np.arange(len(channels))
    stacked = np.concatenate([values for _, values in rows.values()])
    varying = stacked.std(axis=0) > 1e-12
    result.constant = [c for c, v in zip(channels, varying) if not v]
    result.channels = [c for c, v in zip(channels, varying) if v]
    return np.flatnonzero(varying)
