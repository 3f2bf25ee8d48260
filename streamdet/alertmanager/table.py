"""`streamdet alerts`: the alerts topic as a terminal table, for a person watching a replay or an incident.

One line per event, oldest first: when, firing/resolved, entity, score, threshold, how far over it, since when, and
the top channels in words. The topic is read from its beginning with no consumer group (nothing is committed).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, TextIO

from .translate import MalformedAlert, channels_text, parse

HEADER = ("TIME (UTC)", "STATUS", "ENTITY", "SCORE", "THRESHOLD", "OVER", "SINCE (UTC)", "TOP CHANNELS")
WIDTHS = (19, 8, 20, 9, 9, 6, 19, 0)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _line(cells) -> str:
    return "  ".join(str(c).ljust(w) if w else str(c) for c, w in zip(cells, WIDTHS)).rstrip()


def header() -> str:
    return _line(HEADER)


def row(raw: bytes) -> str:
    """One table line for one alerts-topic value (a malformed one says so instead of stopping the table)."""
    try:
        a = parse(raw)
    except MalformedAlert as exc:
        return f"malformed message: {exc.reason}: {exc.detail[:100]}"
    over = f"{a.ratio:.1f}x" if a.threshold > 0 else "-"
    return _line((_when(a.ts), a.status, a.entity, f"{a.score:.4g}", f"{a.threshold:.4g}", over, _when(a.start_ts),
                  channels_text(a.top_channels)))


def tail(poll: Callable[[], list[bytes]], out: TextIO, limit: int = 0, idle_s: float = 0.0,
         clock: Callable[[], float] = time.monotonic) -> int:
    """Print the header, then a line per event as they arrive; stop after `limit` events or `idle_s` seconds
    without one (0 = never). Returns the number of events printed."""
    print(header(), file=out, flush=True)
    printed, last = 0, clock()
    while not limit or printed < limit:
        values = poll()
        for raw in values[: limit - printed] if limit else values:
            print(row(raw), file=out, flush=True)
            printed += 1
        if values:
            last = clock()
        elif idle_s and clock() - last >= idle_s:
            break
    return printed
