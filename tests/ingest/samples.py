"""Per-sample messages made from the fault tests' scenario: the same fixture rows, one prometheus-kafka-adapter
message per channel per row, so that their alerts can be compared with an uninterrupted run on the row records."""

from __future__ import annotations

import orjson

from tests.fixture_data import split_rows
from tests.integration.helpers import T0
from tests.reliability.helpers import ENTITIES, FIRST_ROW, LAST_ROW

SAMPLE_EXTRA = ("input.format=prometheus", "input.interval_s=1")


def sample_messages(channels: list[str]) -> list[tuple[str, bytes]]:
    """(key, value) in production order: per row, per entity, one message per channel (the value as text, as the
    adapter writes it; the time as epoch seconds: row i at T0 + i, as the row records)."""
    rows = split_rows(FIRST_ROW, LAST_ROW)
    out = []
    for i, values in enumerate(rows):
        for entity in ENTITIES:
            for name, value in zip(channels, values.tolist()):
                out.append((entity, orjson.dumps({"timestamp": T0 + FIRST_ROW + i, "value": repr(value),
                                                  "name": name, "labels": {"__name__": name, "instance": entity}})))
    return out
