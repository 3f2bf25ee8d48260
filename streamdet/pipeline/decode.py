"""Decode raw input records (JSON bytes) into columns: entity, timestamp and a fixed-width float32 vector each.

Both input forms of DESIGN.md §4 are accepted: a positional ``values`` list (in the bundle's channel order) or a
``metrics`` mapping by channel name (every channel required, no unknown names). A record that cannot be used raises
DecodeError with a reason from the small fixed set REASONS (bounded, so it can label a metric) and a detail naming the
field and position, which goes to the dead-letter topic.

`Decoder.decode` takes a batch (one record is a batch of one): per record it only parses, looks up the fields and converts the values to C
doubles; entities, timestamps and the float32 range are checked once per poll batch, and only records that fail
those checks take the per-record checked path that names the reason. That keeps decoding close to orjson's own cost.
"""

from __future__ import annotations

import array
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import orjson

from ..errors import DecodeError
from .formats.common import FORMAT_REASONS

MAX_ENTITY_CHARS = 256
NUMBER_TYPES = frozenset({float, int})  # JSON numbers; bool is an int subclass but its type is not int
FLOAT32_MAX = float(np.finfo(np.float32).max)

REASONS = frozenset({
    "too_large", "not_utf8", "not_json", "not_object", "no_entity", "bad_entity", "no_ts", "bad_ts", "no_values",
    "both_forms", "wrong_width", "wrong_type", "non_finite", "missing_channel", "unknown_channel",
    "late", "entity_cap", "bad_state",  # raised by windows.WindowStore, listed here so the whole set lives in one place
}) | FORMAT_REASONS  # the per-sample formats' and the assembler's (formats/common.py)


@dataclass
class DecodedBatch:
    """The usable records of a batch as parallel columns, and the rejected ones, each with its input index."""

    index: list[int] = field(default_factory=list)  # position in the input of each usable record
    entities: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: np.ndarray = None  # float32 [len(index), C]
    rejected: list[tuple[int, DecodeError]] = field(default_factory=list)  # (input index, error), in input order


def _is_number(value: object) -> bool:
    """JSON numbers only: bool is an int subclass in Python but never a metric value."""
    return type(value) is float or type(value) is int


class Decoder:
    """Turns raw bytes into columns for one bundle's channel list."""

    def __init__(self, channels: Sequence[str], max_record_bytes: int, max_future_s: float | None = None):
        self.channels = tuple(channels)
        self.max_future_s = max_future_s
        self.n_channels = len(self.channels)
        self.max_record_bytes = max_record_bytes
        self._index = {name: i for i, name in enumerate(self.channels)}

    def _not_future(self, ts: float, now: float) -> float:
        """A timestamp far ahead of the wall clock would make every later record of its entity look late."""
        if self.max_future_s is not None and ts > now + self.max_future_s:
            raise DecodeError("bad_ts", f"ts: {ts!r} is {ts - now:.0f} s in the future "
                                        f"(input.max_future_s={self.max_future_s:g})")
        return ts

    def decode(self, raws: Sequence[bytes]) -> DecodedBatch:
        """Decode a batch: usable records as columns (values float32 [N, C]) and the rejected with their reasons.

        Per record only the parse, the field lookups, the width and the conversion of the values to C doubles run
        (`_split`); entities, timestamps and booleans are checked once per column (`_column_failures`). A record
        that fails a check, or that the column checks cannot vouch for, takes the checked path (`_merge_checked`),
        which names the reason: a bad record costs what it did before, a good one about half.
        """
        out = DecodedBatch()
        now = time.time()
        newest = now + self.max_future_s if self.max_future_s is not None else math.inf
        positions, entities, stamps, values, checked = self._split(raws)
        matrix = np.frombuffer(values, dtype=np.float64).reshape(len(positions), self.n_channels)  # [n, C]
        suspect = self._column_failures(raws, positions, entities, stamps, newest)
        if suspect:
            keep = [k for k in range(len(positions)) if k not in suspect]
            checked += [positions[k] for k in suspect]
            positions, entities, stamps = [positions[k] for k in keep], [entities[k] for k in keep], \
                [stamps[k] for k in keep]
            matrix = matrix[keep]
        ts = np.array(stamps, dtype=np.float64).tolist()
        from_mapping = [False] * len(positions)
        if checked:
            matrix = self._merge_checked(raws, sorted(checked), now, out, positions, entities, ts, matrix,
                                         from_mapping)
        out.index, out.entities, out.ts = positions, entities, ts
        in_range = np.abs(matrix) <= FLOAT32_MAX  # [N, C]; NaN fails every comparison
        bad = np.flatnonzero(~in_range.all(axis=1))
        if bad.size:
            self._reject_rows(out, bad, matrix, in_range, from_mapping)
            matrix = np.delete(matrix, bad, axis=0)
        out.values = matrix.astype(np.float32)
        return out

    def _split(self, raws: Sequence[bytes]) -> tuple[list, list, list, array.array, list]:
        """Parse every record. Those with the three fields of the `values` form, the right width and only numbers
        (booleans included: see _column_failures) go to the columns, their values straight into C doubles (no
        Python float outlives its record; array.fromlist converts a whole row or nothing, at half the cost of
        array.extend); the rest (too large, unparsable, `metrics`) to the checked path."""
        positions, entities, stamps, checked = [], [], [], []
        values = array.array("d")
        loads, limit, width, append_row = orjson.loads, self.max_record_bytes, self.n_channels, values.fromlist
        for i, raw in enumerate(raws):
            try:
                obj = loads(raw) if len(raw) <= limit else None
                entity, ts, row = obj["entity"], obj["ts"], obj["values"]
                if len(row) != width or "metrics" in obj:
                    raise KeyError("values")
                append_row(row)  # all or nothing; TypeError for anything but a list of numbers
            except (orjson.JSONDecodeError, KeyError, TypeError, OverflowError):
                checked.append(i)  # the checked path names the reason (TypeError: also not an object, too large)
                continue
            positions.append(i)
            entities.append(entity)
            stamps.append(ts)
        return positions, entities, stamps, values, checked

    def _column_failures(self, raws, positions: list, entities: list, stamps: list, newest: float) -> set[int]:
        """Column positions (into `positions`) of records with a bad entity or timestamp, or whose bytes hold a
        JSON boolean (the one non-number the conversion to doubles accepts, as 0/1)."""
        failed: set[int] = set()
        try:
            distinct = set(entities)
        except TypeError:  # an unhashable entity (a list or an object)
            distinct = None
        if distinct is None or not all(map(_valid_entity, distinct)):
            failed.update(k for k, e in enumerate(entities) if not _valid_entity(e))
        if not NUMBER_TYPES.issuperset(map(type, stamps)):
            failed.update(k for k, ts in enumerate(stamps) if not _is_number(ts))
            stamps = [ts if _is_number(ts) else 0.0 for ts in stamps]  # the numeric ones still get range-checked
        t = np.array(stamps, dtype=np.float64)
        failed.update(np.flatnonzero(~((t >= 0) & (t <= newest))).tolist())
        batch = b"".join(raws)
        if b"true" in batch or b"false" in batch:
            failed.update(k for k, i in enumerate(positions) if b"true" in raws[i] or b"false" in raws[i])
        return failed

    def _merge_checked(self, raws, checked: list[int], now: float, out: DecodedBatch, positions: list,
                       entities: list, ts: list, matrix: np.ndarray, from_mapping: list) -> np.ndarray:
        """Run the checked path on `checked` (input positions, ascending): rejections go to `out`, usable records
        are merged into the columns in input order (the lists are updated in place); returns the merged values
        [N, C]."""
        extra_rows = []
        for i in checked:
            try:
                obj = self._parse(raws[i])
                entity = _entity(obj)
                stamp = self._not_future(_timestamp(obj), now)
                row, mapped = self._row(obj)
            except DecodeError as exc:
                out.rejected.append((i, exc))
                continue
            positions.append(i)
            entities.append(entity)
            ts.append(stamp)
            from_mapping.append(mapped)
            extra_rows.append(row)
        if not extra_rows:
            return matrix
        merged = np.concatenate((matrix, np.array(extra_rows, dtype=np.float64).reshape(-1, self.n_channels)))
        order = sorted(range(len(positions)), key=positions.__getitem__)
        for column in (positions, entities, ts, from_mapping):
            column[:] = [column[k] for k in order]
        return merged[order]

    def _row(self, obj: dict) -> tuple[list, bool]:
        """(the record's numbers in channel order, sent as a mapping); types and width checked, range per batch."""
        has_values, has_metrics = "values" in obj, "metrics" in obj
        if has_values and has_metrics:
            raise DecodeError("both_forms", "record has both 'values' and 'metrics'; send one")
        if has_values:
            return self._from_list(obj["values"]), False
        if has_metrics:
            return self._from_mapping(obj["metrics"]), True
        raise DecodeError("no_values", "record has neither 'values' (list) nor 'metrics' (mapping)")

    def _reject_rows(self, out: DecodedBatch, bad: np.ndarray, matrix: np.ndarray, in_range: np.ndarray,
                     from_mapping: list[bool]) -> None:
        """Move rows holding a value outside float32's finite range from the usable columns to the rejected."""
        for k in bad[::-1]:  # from the end, so earlier positions stay valid while deleting
            column = int(np.flatnonzero(~in_range[k])[0])
            name = self.channels[column]
            where = f"metrics.{name}" if from_mapping[k] else f"values[{column}] ({name})"
            value = float(matrix[k, column])  # a plain float: numpy's repr would read np.float64(...)
            error = DecodeError("non_finite", f"{where}: {value!r} is not a finite float32")
            out.rejected.append((out.index[k], error))
            del out.index[k], out.entities[k], out.ts[k]
        out.rejected.sort(key=lambda item: item[0])

    def _parse(self, raw: bytes) -> dict:
        if len(raw) > self.max_record_bytes:
            raise DecodeError("too_large", f"record is {len(raw)} bytes, limit input.max_record_bytes="
                                           f"{self.max_record_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(_json_failure(raw), str(exc)) from None
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"top level is a JSON {_json_type(obj)}, expected an object")
        return obj

    def _from_list(self, values: object) -> list:
        if not isinstance(values, list):
            raise DecodeError("wrong_type", f"values: expected a list, got {_json_type(values)}")
        if len(values) != self.n_channels:
            raise DecodeError("wrong_width", f"values: {len(values)} entries, the model expects {self.n_channels}")
        if not NUMBER_TYPES.issuperset(map(type, values)):  # one C-level pass; the loop below only names the culprit
            i, v = next((i, v) for i, v in enumerate(values) if not _is_number(v))
            raise DecodeError("wrong_type", f"values[{i}] ({self.channels[i]}): expected a number, "
                                            f"got {_json_type(v)}")
        return values

    def _from_mapping(self, metrics: object) -> list:
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
        row = [0.0] * self.n_channels
        for name, v in metrics.items():
            if not _is_number(v):
                raise DecodeError("wrong_type", f"metrics.{name}: expected a number, got {_json_type(v)}")
            row[self._index[name]] = v
        return row


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


def _valid_entity(entity: object) -> bool:
    return type(entity) is str and 0 < len(entity) <= MAX_ENTITY_CHARS and entity.isprintable()


def _entity(obj: dict) -> str:
    if "entity" not in obj:
        raise DecodeError("no_entity", "field 'entity' is missing")
    entity = obj["entity"]
    if type(entity) is not str:
        raise DecodeError("bad_entity", f"entity: expected a string, got {_json_type(entity)}")
    if not _valid_entity(entity):
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
