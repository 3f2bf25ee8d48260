"""Decode one raw input record (JSON bytes) into a Record with a fixed-width float32 vector.

Both input forms of DESIGN.md §4 are accepted: a positional ``values`` list (in the bundle's channel order) or a
``metrics`` mapping by channel name (every channel required, no unknown names). A record that cannot be used raises
DecodeError with a reason from the small fixed set REASONS (bounded, so it can label a metric) and a detail naming the
field and position, which goes to the dead-letter topic.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, Sequence

import numpy as np
import orjson

from ..errors import DecodeError

MAX_ENTITY_CHARS = 256
NUMBER_TYPES = frozenset({float, int})  # JSON numbers; bool is an int subclass but its type is not int
FLOAT32_MAX = float(np.finfo(np.float32).max)

REASONS = frozenset({
    "too_large", "not_utf8", "not_json", "not_object", "no_entity", "bad_entity", "no_ts", "bad_ts", "no_values",
    "both_forms", "wrong_width", "wrong_type", "non_finite", "missing_channel", "unknown_channel",
    "late", "entity_cap", "bad_state",  # raised by windows.WindowStore, listed here so the whole set lives in one place
})


class Record(NamedTuple):
    entity: str
    ts: float  # seconds since the epoch
    values: np.ndarray  # float32[C], in channel order


def _is_number(value: object) -> bool:
    """JSON numbers only: bool is an int subclass in Python but never a metric value."""
    return type(value) is float or type(value) is int


class Decoder:
    """Turns raw bytes into Records for one bundle's channel list."""

    def __init__(self, channels: Sequence[str], max_record_bytes: int, max_future_s: float | None = None):
        self.channels = tuple(channels)
        self.max_future_s = max_future_s
        self.n_channels = len(self.channels)
        self.max_record_bytes = max_record_bytes
        self._index = {name: i for i, name in enumerate(self.channels)}

    def _not_future(self, ts: float) -> float:
        """A timestamp far ahead of the wall clock would make every later record of its entity look late."""
        if self.max_future_s is not None and ts > time.time() + self.max_future_s:
            raise DecodeError("bad_ts", f"ts: {ts!r} is {ts - time.time():.0f} s in the future "
                                        f"(input.max_future_s={self.max_future_s:g})")
        return ts

    def decode(self, raw: bytes) -> Record:
        """Parse and validate one record; raises DecodeError(reason, detail)."""
        obj = self._parse(raw)
        entity = _entity(obj)
        ts = self._not_future(_timestamp(obj))
        has_values, has_metrics = "values" in obj, "metrics" in obj
        if has_values and has_metrics:
            raise DecodeError("both_forms", "record has both 'values' and 'metrics'; send one")
        if has_values:
            values = self._from_list(obj["values"])
        elif has_metrics:
            values = self._from_mapping(obj["metrics"])
        else:
            raise DecodeError("no_values", "record has neither 'values' (list) nor 'metrics' (mapping)")
        return Record(entity, ts, values)

    def _parse(self, raw: bytes) -> dict:
        if len(raw) > self.max_record_bytes:
            raise DecodeError("too_large", f"record is {len(raw)} bytes, limit input.max_record_bytes="
                                           f"{self.max_record_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(_json_failure(raw), str(exc)) from None
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"top level is a JSON {type(obj).__name__}, expected an object")
        return obj

    def _from_list(self, values: object) -> np.ndarray:
        if not isinstance(values, list):
            raise DecodeError("wrong_type", f"values: expected a list, got {_json_type(values)}")
        if len(values) != self.n_channels:
            raise DecodeError("wrong_width", f"values: {len(values)} entries, the model expects {self.n_channels}")
        if not NUMBER_TYPES.issuperset(map(type, values)):  # one C-level pass; the loop below only names the culprit
            i, v = next((i, v) for i, v in enumerate(values) if not _is_number(v))
            raise DecodeError("wrong_type", f"values[{i}] ({self.channels[i]}): expected a number, "
                                            f"got {_json_type(v)}")
        return self._finite(np.asarray(values, dtype=np.float64), "values")

    def _from_mapping(self, metrics: object) -> np.ndarray:
        if not isinstance(metrics, dict):
            raise DecodeError("wrong_type", f"metrics: expected a mapping, got {_json_type(metrics)}")
        unknown = [name for name in metrics if name not in self._index]
        if unknown:
            raise DecodeError("unknown_channel", f"metrics.{unknown[0]}: not a channel of the model "
                                                 f"({len(unknown)} unknown)")
        if len(metrics) != self.n_channels:
            missing = [name for name in self.channels if name not in metrics]
            raise DecodeError("missing_channel", f"metrics.{missing[0]}: required channel missing "
                                                 f"({len(missing)} missing)")
        row = np.empty(self.n_channels, dtype=np.float64)
        for name, v in metrics.items():
            if not _is_number(v):
                raise DecodeError("wrong_type", f"metrics.{name}: expected a number, got {_json_type(v)}")
            row[self._index[name]] = v
        return self._finite(row, "metrics")

    def _finite(self, row: np.ndarray, field: str) -> np.ndarray:
        """Cast to float32; NaN, inf and values beyond float32's range are rejected (NaN fails every comparison)."""
        in_range = np.abs(row) <= FLOAT32_MAX  # [C]
        if in_range.all():
            return row.astype(np.float32)
        i = int(np.flatnonzero(~in_range)[0])
        where = f"values[{i}]" if field == "values" else f"metrics.{self.channels[i]}"
        raise DecodeError("non_finite", f"{where}: {row[i]!r} is not a finite float32")


def _json_failure(raw: bytes) -> str:
    """Tell bytes that are not UTF-8 text apart from text that is not JSON."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    return "not_json"


def _json_type(value: object) -> str:
    names = {bool: "boolean", str: "string", type(None): "null", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _entity(obj: dict) -> str:
    if "entity" not in obj:
        raise DecodeError("no_entity", "field 'entity' is missing")
    entity = obj["entity"]
    if not isinstance(entity, str):
        raise DecodeError("bad_entity", f"entity: expected a string, got {_json_type(entity)}")
    if not entity or len(entity) > MAX_ENTITY_CHARS or not entity.isprintable():
        raise DecodeError("bad_entity", f"entity: must be 1..{MAX_ENTITY_CHARS} printable characters, "
                                        f"got {entity[:40]!r}")
    return entity


def _timestamp(obj: dict) -> float:
    if "ts" not in obj:
        raise DecodeError("no_ts", "field 'ts' (seconds since the epoch) is missing")
    ts = obj["ts"]
    if not _is_number(ts):
        raise DecodeError("bad_ts", f"ts: expected a number of seconds, got {_json_type(ts)}")
    ts = float(ts)
    if not math.isfinite(ts) or ts < 0:
        raise DecodeError("bad_ts", f"ts: {ts!r} is not a finite, non-negative number of seconds")
    return ts
