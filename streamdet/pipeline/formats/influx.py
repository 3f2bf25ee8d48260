"""InfluxDB line protocol (what Telegraf's Kafka output writes by default), one or more lines per message:

    cpu,host=web-1,cpu=cpu-total usage_user=3.2,usage_idle=95.1 1796032907000000000

The mapping is Telegraf JSON's (telegraf.py): entity = tag `input.entity_key` (default `host`), channel =
measurement/field plus the selected tags. Field values: floats, integers (`5i`, `5u`), booleans (0/1) and strings
(skipped: not metrics). The timestamp is required; its precision (ns by default) is told from its magnitude. Escapes
follow the protocol: `\\,` `\\ ` `\\=` in names, tag keys and values; `\\"` and `\\\\` inside string fields.
"""

from __future__ import annotations

from .common import Sample, check_size, entity_name, epoch_seconds
from .telegraf import TelegrafDecoder, metric_samples
from ...errors import DecodeError

BOOLEANS = {"t": 1.0, "T": 1.0, "true": 1.0, "True": 1.0, "TRUE": 1.0,
            "f": 0.0, "F": 0.0, "false": 0.0, "False": 0.0, "FALSE": 0.0}


class InfluxDecoder(TelegrafDecoder):
    """Telegraf's mapping (options, counters, skipped string fields) with line protocol's syntax."""

    name = "influx"

    def decode(self, raw: bytes) -> list[Sample]:
        check_size(raw, self.limit)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", "message is not UTF-8 text") from None
        out: list[Sample] = []
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                out.extend(self._line(line, f"line {number}: "))
        return out

    def _line(self, line: str, where: str) -> list[Sample]:
        sections = split_unescaped(line, " ", quotes=True)
        if len(sections) != 3:
            raise DecodeError("no_ts" if len(sections) == 2 else "bad_field",
                              f"{where}expected 'measurement[,tags] fields timestamp', got {len(sections)} "
                              f"section(s)")
        key, field_text, stamp = sections
        name, *tag_parts = split_unescaped(key, ",")
        tags = {k: unescape(v) for k, v in (pair(part, where + "tag ") for part in tag_parts)}
        if not name:
            raise DecodeError("bad_field", f"{where}empty measurement name")
        if self.entity_key not in tags:
            raise DecodeError("no_entity", f"{where}tag {self.entity_key!r} (input.entity_key) is missing")
        entity = entity_name(tags[self.entity_key], f"{where}tag {self.entity_key}")
        try:
            ts = epoch_seconds(int(stamp), f"{where}timestamp")
        except ValueError:
            raise DecodeError("bad_ts", f"{where}timestamp {stamp[:40]!r} is not an integer") from None
        fields = {k: field_value(v, f"{where}field {k}") for k, v in
                  (pair(part, where + "field ") for part in split_unescaped(field_text, ",", quotes=True))}
        return metric_samples(self, entity, unescape(name), tags, fields, ts, where + "field ")


def split_unescaped(text: str, sep: str, quotes: bool = False) -> list[str]:
    """Split on `sep` where it is neither backslash-escaped nor (with `quotes`) inside a double-quoted string.
    Escapes are kept (unescape() removes them), so a later split sees them too."""
    parts, start, i, quoted = [], 0, 0, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if quotes and char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def pair(text: str, where: str) -> tuple[str, str]:
    parts = split_unescaped(text, "=", quotes=True)
    if len(parts) < 2 or not parts[0]:
        raise DecodeError("bad_field", f"{where}{text[:40]!r}: expected key=value")
    return unescape(parts[0]), "=".join(parts[1:])


def field_value(text: str, where: str) -> object:
    """A field's value: str for strings (skipped by the mapping), bool, int or float; else `wrong_type`."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if text in BOOLEANS:
        return bool(BOOLEANS[text])
    try:
        if text[-1:] in ("i", "u"):
            return int(text[:-1])
        return float(text)  # nan and inf parse here; finite_value() rejects them as non_finite
    except ValueError:
        raise DecodeError("wrong_type", f"{where}: {text[:40]!r} is not a number, boolean or string") from None
