"""A timestamp column in a user's CSV file: found by name (`data.timestamp_column`, or a header such as `timestamp`,
`time`, `ts`, `date`) or by its first cell being a date, and parsed as ISO 8601 text or epoch seconds (ms, us and ns
told apart by magnitude, as the agents' formats do: exports often carry milliseconds).

Exported metric files nearly always carry one; it used to make the whole file "not numeric". The parsed times are the
record timestamps of replays and backtests (seconds since the epoch, float64; a time without a zone is UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .csvread import parse_numeric_text, read_text

TIME_NAMES = frozenset({"timestamp", "time", "ts", "date", "datetime", "time_stamp", "_time", "@timestamp"})


def read_timed_csv(path: Path, column: Optional[str] = None) -> tuple[list[str], np.ndarray, Optional[np.ndarray]]:
    """(channel names, values [T, C] float32, timestamps [T] float64 or None when the file has no time column)."""
    text = read_text(path).replace("\r\n", "\n")  # Windows line ends: moving the time column keeps cells intact
    header, _, body = text.partition("\n")
    names = [h.strip() for h in header.strip().split(",")]
    first = body.split("\n", 1)[0].split(",")
    where = timestamp_index(path, names, first, column)
    if where is None:
        channels, values, _ = parse_numeric_text(path, text)
        return channels, values, None
    if where != 0:  # move the time column to the front: the numeric parser skips leading columns
        lines = [line.split(",") for line in text.split("\n") if line.strip()]
        text = "\n".join(",".join([cells[where]] + cells[:where] + cells[where + 1:]) for cells in lines)
    channels, values, cells = parse_numeric_text(path, text, skip_columns=1)
    return channels, values, parse_times(path, names[where], cells)


def timestamp_index(path: Path, names: list[str], first_row: list[str], column: Optional[str]) -> Optional[int]:
    if column is not None:
        if column not in names:
            raise DataError(f"{path}: data.timestamp_column {column!r} is not in the header ({', '.join(names[:8])}"
                            f"{', ...' if len(names) > 8 else ''})")
        return names.index(column)
    for i, name in enumerate(names):
        if name.lower() in TIME_NAMES:
            return i
    for i, cell in enumerate(first_row[:len(names)]):
        if not _is_float(cell) and _iso(cell.strip()) is not None:
            return i
    return None


def parse_times(path: Path, column: str, cells: list[str]) -> np.ndarray:
    """Epoch seconds (or ms, us, ns) when every cell is a number, else ISO 8601 per cell; errors name the line."""
    try:
        numbers = np.array(cells, dtype=np.float64)
    except ValueError:  # not all numbers: ISO 8601
        pass
    else:
        return _epoch_seconds(path, column, cells, numbers)
    out = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        moment = _iso(cell.strip())
        if moment is None:
            raise DataError(f"{path}: line {i + 2}, column {column!r}: {cell[:40]!r} is neither ISO 8601 nor epoch "
                            "seconds")
        out[i] = moment
    return out


def _epoch_seconds(path: Path, column: str, cells: list[str], numbers: np.ndarray) -> np.ndarray:
    """Numbers as epoch seconds, ns / us / ms by magnitude (formats.common.epoch_seconds' rule: any time after 1973
    in ms is > 1e11, any before 5138 in seconds < 1e11). NaN, inf or a negative time would only be rejected record by
    record downstream (the daemon's bad_ts): named here, with its line."""
    bad = np.flatnonzero(~(np.isfinite(numbers) & (numbers >= 0)))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: line {i + 2}, column {column!r}: {cells[i].strip()[:40]!r} is not a finite, "
                        "non-negative time")
    return numbers / np.select([numbers > 1e17, numbers > 1e14, numbers > 1e11], [1e9, 1e6, 1e3], 1.0)


def _iso(text: str) -> Optional[float]:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
