"""What every per-sample decoder shares: the Sample value, its kinds, and checks that name what is wrong.

A per-sample format (collectd, Telegraf JSON, Influx line protocol, prometheus-kafka-adapter) carries one metric, or
a few, per message; each decoder turns one message into `Sample`s. Counters arrive as raw totals or as rates; the
decoder marks each sample's `kind` and `rates.RateTracker` turns totals into per-second rates.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import orjson

from ...errors import DecodeError

MAX_ENTITY_CHARS = 256
MAX_CHANNEL_CHARS = 512
FLOAT32_MAX = 3.4028234663852886e38

GAUGE = "gauge"  # a level: used as it is
COUNTER = "counter"  # a running total that may wrap at 2**32 or 2**64 (collectd COUNTER)
DERIVE = "derive"  # a running total; going down means the source restarted (collectd DERIVE, Prometheus *_total)
ABSOLUTE = "absolute"  # a count since the previous sample (collectd ABSOLUTE): divided by the elapsed time
KINDS = (GAUGE, COUNTER, DERIVE, ABSOLUTE)

# Rejection reasons of the per-sample formats, in addition to decode.REASONS (bounded: they label a metric).
FORMAT_REASONS = frozenset({"no_field", "bad_field", "bad_value", "counter_reset", "other_partition", "no_channel"})


class Sample(NamedTuple):
    entity: str
    channel: str
    ts: float  # seconds since the epoch
    value: float  # a gauge, a rate, or (before rates.RateTracker) a counter's total
    kind: str = GAUGE
    interval: float = 0.0  # the agent's own collection interval when the message says it (collectd), else 0


def json_type(value: object) -> str:
    names = {bool: "boolean", str: "string", type(None): "null", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def is_number(value: object) -> bool:
    """JSON numbers only: a boolean is not a metric value."""
    return type(value) is float or type(value) is int


def parse_json(raw: bytes, limit: int) -> object:
    """orjson.loads with the size limit first; errors name what is wrong."""
    check_size(raw, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", "message is not UTF-8 text") from None
        raise DecodeError("not_json", str(exc)) from None


def check_size(raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        raise DecodeError("too_large", f"message is {len(raw)} bytes, limit input.max_record_bytes={limit}")


def need(obj: dict, key: str, where: str) -> object:
    """obj[key], or a `no_field` rejection naming the field."""
    if key not in obj:
        raise DecodeError("no_field", f"{where}{key}: field is missing")
    return obj[key]


def text_field(obj: dict, key: str, where: str, required: bool = True) -> str:
    value = need(obj, key, where) if required else obj.get(key, "")
    if type(value) is not str:
        raise DecodeError("bad_field", f"{where}{key}: expected a string, got {json_type(value)}")
    return value


def entity_name(value: object, where: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_ENTITY_CHARS or not value.isprintable():
        shown = value[:40] if type(value) is str else json_type(value)
        raise DecodeError("bad_entity", f"{where}: entity must be 1..{MAX_ENTITY_CHARS} printable characters, "
                                        f"got {shown!r}")
    return value


def channel_name(name: str, where: str) -> str:
    if not 0 < len(name) <= MAX_CHANNEL_CHARS or not name.isprintable():
        raise DecodeError("no_channel", f"{where}: channel name must be 1..{MAX_CHANNEL_CHARS} printable "
                                        f"characters, got {name[:60]!r}")
    return name


def finite_value(value: object, where: str) -> float:
    """A number within float32's finite range (what the model sees), else `wrong_type` / `non_finite`."""
    if not is_number(value):
        raise DecodeError("wrong_type", f"{where}: expected a number, got {json_type(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not abs(number) <= FLOAT32_MAX:
        raise DecodeError("non_finite", f"{where}: {value!r} is not a finite float32")
    return number


def epoch_seconds(value: object, where: str, unit: Optional[float] = None) -> float:
    """A non-negative timestamp in seconds. Without `unit`, ns / us / ms are told apart by magnitude (every
    timestamp after 1973 in ms is > 1e11, and every one before 5138 in seconds is < 1e11)."""
    if not is_number(value):
        raise DecodeError("bad_ts", f"{where}: expected a number, got {json_type(value)}")
    try:
        ts = float(value)
    except OverflowError:
        ts = math.inf
    if not math.isfinite(ts) or ts < 0:
        raise DecodeError("bad_ts", f"{where}: {value!r} is not a finite, non-negative time")
    if unit is not None:
        return ts * unit
    per_second = 10 ** 9 if ts > 1e17 else 10 ** 6 if ts > 1e14 else 10 ** 3 if ts > 1e11 else 1
    return value / per_second  # int / int is correctly rounded: 1796032907000000000 ns is exactly 1796032907.0 s


def labelled(base: str, labels: dict, keep: Optional[tuple[str, ...]], skip: tuple[str, ...]) -> str:
    """`base{k=v,...}` with the labels named in `keep` (None = all but `skip`), sorted by key; `base` alone when
    none apply. Used by telegraf, influx and prometheus for channel names."""
    chosen = sorted((k, v) for k, v in labels.items()
                    if k not in skip and (keep is None or k in keep))
    if not chosen:
        return base
    return base + "{" + ",".join(f"{k}={v}" for k, v in chosen) + "}"
