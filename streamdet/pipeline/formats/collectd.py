"""collectd's write_kafka plugin with `Format JSON`: a message is a JSON list of value lists.

    [{"values":[0.14,0.3,0.37],"dstypes":["gauge","gauge","gauge"],"dsnames":["shortterm","midterm","longterm"],
      "time":1796032907.329,"interval":1.0,"host":"host-a","plugin":"load","plugin_instance":"","type":"load",
      "type_instance":""}]

entity = host; channel = plugin[-plugin_instance]/type[-type_instance][/dsname] (the data-source name is appended
when the type has several, or one not called `value`: `interface-eth0/if_octets/rx`, `memory/memory-used`).
With write_kafka's default `StoreRates true` counter and derive values are already per-second rates and the first
of each is null (skipped: there is no rate yet); with `StoreRates false` they are totals, and `rates.RateTracker`
derives the rates (`input.agent_rates: false`). A null gauge is a measurement that failed: rejected (`non_finite`).
"""

from __future__ import annotations

from typing import Optional

import orjson

from .common import (ABSOLUTE, COUNTER, DERIVE, FLOAT32_MAX, GAUGE, Sample, channel_name, entity_name, epoch_seconds,
                     finite_value, json_type, need, parse_json, text_field)
from ...errors import DecodeError

DSTYPES = {"gauge": GAUGE, "counter": COUNTER, "derive": DERIVE, "absolute": ABSOLUTE}
NUMBERS = (float, int)  # JSON numbers; bool is an int subclass but its type is not int
MAX_SEEN = 200_000  # series whose names are cached


class CollectdDecoder:
    name = "collectd"

    def __init__(self, options):
        self.limit = options.max_record_bytes
        self.agent_rates = options.agent_rates
        self.entity_key = options.entity_key or "host"
        # (host, plugin, plugin_instance, type, type_instance) -> (dsnames, dstypes, channels, kinds) of value lists
        # that passed the checked path: the same series again skips name building and validation (_known)
        self._seen: dict[tuple, tuple] = {}

    def decode(self, raw: bytes) -> list[Sample]:
        if len(raw) <= self.limit:
            try:
                known = self._known(orjson.loads(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, ValueError, OverflowError):
                known = None
            if known is not None:
                return known
        return self._checked(raw)

    def _known(self, obj) -> Optional[list[Sample]]:
        """The common message, fast: one value list of a series seen before, gauges (or the agent's rates), every
        value a number in float32's range. None (or an exception) sends the message to the checked path, which
        names what is wrong."""
        if type(obj) is not list or len(obj) != 1:
            return None
        item = obj[0]
        entity = item[self.entity_key]
        seen = self._seen.get((entity, item["plugin"], item["plugin_instance"], item["type"], item["type_instance"]))
        if seen is None or item["dsnames"] != seen[0] or item["dstypes"] != seen[1]:
            return None
        ts, interval, values = item["time"], item.get("interval", 0.0), item["values"]
        if type(ts) not in NUMBERS or not ts >= 0 or type(interval) not in NUMBERS or not interval >= 0:
            return None
        out, new, ts, interval = [], tuple.__new__, float(ts), float(interval)
        for value, channel, kind in zip(values, seen[2], seen[3]):
            if type(value) not in NUMBERS:
                if value is None and kind != GAUGE and self.agent_rates:
                    continue
                return None
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX or (kind != GAUGE and self.agent_rates and value < 0):
                return None
            # tuple.__new__: a Sample without the Python-level constructor (a fifth of the cost, per sample)
            out.append(new(Sample, (entity, channel, ts, float(value), GAUGE if self.agent_rates else kind, interval)))
        return out if len(values) == len(seen[2]) else None

    def _checked(self, raw: bytes) -> list[Sample]:
        obj = parse_json(raw, self.limit)
        if isinstance(obj, dict):  # one value list without the brackets (some relays unwrap them)
            obj = [obj]
        if not isinstance(obj, list):
            raise DecodeError("not_object", f"top level is a JSON {json_type(obj)}, expected a list of value lists")
        out: list[Sample] = []
        for i, item in enumerate(obj):
            where = f"[{i}]."
            if not isinstance(item, dict):
                raise DecodeError("not_object", f"[{i}]: expected an object, got {json_type(item)}")
            out.extend(self._value_list(item, where))
        return out

    def _value_list(self, item: dict, where: str) -> list[Sample]:
        entity = entity_name(need(item, self.entity_key, where), f"{where}{self.entity_key}")
        ts = epoch_seconds(need(item, "time", where), f"{where}time", unit=1.0)
        interval = item.get("interval", 0.0)
        interval = float(interval) if type(interval) in (int, float) and interval > 0 else 0.0
        base = self._base_channel(item, where)
        values, dstypes, dsnames = (need(item, key, where) for key in ("values", "dstypes", "dsnames"))
        for key, column in (("values", values), ("dstypes", dstypes), ("dsnames", dsnames)):
            if not isinstance(column, list) or not column:
                raise DecodeError("bad_field", f"{where}{key}: expected a non-empty list, got {json_type(column)}")
        if not len(values) == len(dstypes) == len(dsnames):
            raise DecodeError("bad_field", f"{where}values/dstypes/dsnames: lengths {len(values)}, {len(dstypes)}, "
                                           f"{len(dsnames)} differ")
        out = []
        for j, (value, dstype, dsname) in enumerate(zip(values, dstypes, dsnames)):
            kind = DSTYPES.get(dstype) if type(dstype) is str else None
            if kind is None:
                raise DecodeError("bad_field", f"{where}dstypes[{j}]: {dstype!r} is not one of {', '.join(DSTYPES)}")
            if type(dsname) is not str or not dsname:
                raise DecodeError("bad_field", f"{where}dsnames[{j}]: expected a non-empty string")
            if value is None and kind != GAUGE and self.agent_rates:
                continue  # the first sample of a rate: the agent has nothing to compare it with yet
            number = finite_value(value, f"{where}values[{j}] ({dsname})")
            if self.agent_rates and kind != GAUGE:  # already a per-second rate: a level from here on
                if number < 0:
                    raise DecodeError("counter_reset", f"{where}values[{j}] ({dsname}): {dstype} rate {number!r} is "
                                                       f"negative (the counter went backwards)")
                kind = GAUGE
            name = base if len(dsnames) == 1 and dsname == "value" else f"{base}/{dsname}"
            out.append(Sample(entity, channel_name(name, f"{where}dsnames[{j}]"), ts, number, kind, interval))
        self._remember(item, entity, dsnames, dstypes)
        return out

    def _remember(self, item: dict, entity: str, dsnames: list, dstypes: list) -> None:
        """A value list that passed every check: its series' names and kinds, for _known (bounded: cleared when
        full, as an unknown-host flood would otherwise grow it)."""
        if len(self._seen) >= MAX_SEEN:
            self._seen.clear()
        base = self._base_channel(item, "")
        names = [base if len(dsnames) == 1 and d == "value" else f"{base}/{d}" for d in dsnames]
        key = (entity, item["plugin"], item.get("plugin_instance", ""), item["type"], item.get("type_instance", ""))
        self._seen[key] = (list(dsnames), list(dstypes), names, [DSTYPES[t] for t in dstypes])

    @staticmethod
    def _base_channel(item: dict, where: str) -> str:
        plugin, plugin_instance, type_, type_instance = (
            text_field(item, key, where, required=key in ("plugin", "type"))
            for key in ("plugin", "plugin_instance", "type", "type_instance"))
        if not plugin or not type_:
            raise DecodeError("bad_field", f"{where}plugin/type: must not be empty")
        left = f"{plugin}-{plugin_instance}" if plugin_instance else plugin
        right = f"{type_}-{type_instance}" if type_instance else type_
        return f"{left}/{right}"
