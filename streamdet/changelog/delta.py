"""What changed in one entity's state since its previous checkpoint, and how to apply that to the previous state.

Pure functions over the plain state dicts of engine.Pipeline.state_dict ({"window", "threshold", "alert"}, and
"assembly" for per-sample formats, which travels whole like any other part this module does not know). Only two
parts are large, and both only ever grow at one end between two checkpoints:
- the window is a ring buffer: the points pushed since the last checkpoint overwrite the slots after the last
  write position, so the new points (values, timestamps, sources) and the ring's counters describe the change;
- the threshold keeps a bounded deque (SPOT's peaks, or the rolling percentile's scores) that is appended to, the
  oldest values falling out: the appended values and the new length describe it.
Everything else (threshold fit and counters, alert state: a few hundred bytes) travels whole in every delta.

`diff` does not need the previous state, only its `Mark` (a few counters and the newest element of each buffer,
about 200 bytes per entity instead of a copy of its window and peaks). It returns None when the current state is
not the marked one plus appends (the entity was evicted and came back, a model reload reset its threshold): the
caller then writes a snapshot. `apply` checks that a delta starts where the state ends (DeltaError otherwise).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

RING_PARTS = ("values", "ts", "sources")
COUNTERS = {"peaks": "n_peaks", "values": "appended"}  # appended deque in a threshold detector -> its counter


class DeltaError(ValueError):
    """A delta does not continue the state it is applied to (out of order, or from another chain)."""


@dataclass(frozen=True)
class Mark:
    """What `diff` needs to know of the state at the previous checkpoint."""

    seen: int  # points ever pushed into the window
    pos: int  # next ring slot to write
    newest_source: Any  # source and timestamp of the newest window point (identify the ring)
    newest_ts: float
    buffer: Optional[str]  # the threshold's appended deque ("peaks" or "values"), None if it has none
    count: int  # its counter: values ever appended
    length: int  # values held
    last: Optional[float]  # newest value held
    crc: int  # crc32 of the values held (checks a deque that was not full yet exactly)


def mark_of(state: dict) -> Optional[Mark]:
    """None for a state without a window (an entity whose rows are still being assembled: small, always whole)."""
    if "window" not in state:
        return None
    window = state["window"]
    L = len(window["ts"])
    newest = (int(window["pos"]) - 1) % L
    buffer = _buffer_name(state["threshold"]["detector"])
    detector = state["threshold"]["detector"]
    values = detector[buffer] if buffer else ()
    return Mark(int(window["seen"]), int(window["pos"]), window["sources"][newest], float(window["ts"][newest]),
                buffer, int(detector[COUNTERS[buffer]]) if buffer else 0, len(values),
                float(values[-1]) if len(values) else None, _crc(values[:len(values)]))


def _crc(values) -> int:
    return zlib.crc32(np.ascontiguousarray(values, dtype=np.float64).tobytes())


def _buffer_name(detector: dict) -> Optional[str]:
    for name, counter in COUNTERS.items():
        if name in detector and counter in detector:
            return name
    return None


def diff(mark: Mark, state: dict) -> Optional[dict]:
    """The delta from the marked state to `state`, or None when `state` is not the marked one plus appends."""
    if "window" not in state:
        return None
    window = _ring_delta(mark, state["window"])
    appended = _buffer_delta(mark, state["threshold"]["detector"])
    if window is None or appended is None:
        return None
    delta = {k: v for k, v in state.items() if k not in ("window", "threshold")}
    threshold = dict(state["threshold"])
    if mark.buffer:
        threshold["detector"] = {k: v for k, v in threshold["detector"].items() if k != mark.buffer}
    delta.update(window=window, threshold=threshold, appended=appended)
    return delta


def _ring_delta(mark: Mark, window: dict) -> Optional[dict]:
    L, pos = len(window["ts"]), int(window["pos"])
    k = int(window["seen"]) - mark.seen
    if k < 0 or (mark.pos + k) % L != pos:
        return None
    if k < L:  # the point that was newest at the mark must still sit just before the new ones
        slot = (pos - k - 1) % L
        if window["sources"][slot] != mark.newest_source or float(window["ts"][slot]) != mark.newest_ts:
            return None
    m = min(k, L)
    slots = (pos - m + np.arange(m)) % L
    delta = {"from_seen": mark.seen, "values": window["values"][slots], "ts": window["ts"][slots],
             "sources": [window["sources"][s] for s in slots.tolist()]}
    delta.update((k, v) for k, v in window.items() if k not in RING_PARTS)
    return delta


def _buffer_delta(mark: Mark, detector: dict) -> Optional[dict]:
    if _buffer_name(detector) != mark.buffer:
        return None
    if mark.buffer is None:
        return {}
    values, count = detector[mark.buffer], int(detector[COUNTERS[mark.buffer]])
    k, n = count - mark.count, len(values)
    kept = n - k  # values of the mark still held, at the front
    if k < 0 or kept < 0 or kept > mark.length:
        return None
    if kept and float(values[kept - 1]) != mark.last:
        return None
    if kept == mark.length and _crc(values[:kept]) != mark.crc:  # nothing fell out: the held part is the mark's
        return None
    return {"from": mark.count, "new": np.asarray(values[kept:], dtype=np.float64), "length": n}


def apply(state: dict, delta: dict) -> dict:
    """The state after `delta` (a new dict; `state` is not modified). DeltaError when the delta does not start at
    this state."""
    out = {k: v for k, v in delta.items() if k not in ("window", "threshold", "appended")}
    out["window"] = _apply_ring(state["window"], delta["window"])
    out["threshold"] = _apply_buffer(state["threshold"], delta["threshold"], delta["appended"])
    return out


def _apply_ring(window: dict, delta: dict) -> dict:
    if int(window["seen"]) != int(delta["from_seen"]):
        raise DeltaError(f"window delta starts after point {delta['from_seen']}, the state holds {window['seen']}")
    L = len(window["ts"])
    m = len(delta["ts"])
    if m > L or len(delta["sources"]) != m or len(delta["values"]) != m:
        raise DeltaError(f"window delta of {m} points does not fit a ring of {L}")
    slots = ((int(delta["pos"]) - m + np.arange(m)) % L).tolist()
    out = {k: v for k, v in delta.items() if k not in RING_PARTS and k != "from_seen"}
    out["values"], out["ts"] = window["values"].copy(), window["ts"].copy()
    out["values"][slots] = delta["values"]
    out["ts"][slots] = delta["ts"]
    sources = list(window["sources"])
    for slot, source in zip(slots, delta["sources"]):
        sources[slot] = source
    out["sources"] = sources
    return out


def _apply_buffer(threshold: dict, delta: dict, appended: dict) -> dict:
    out = dict(delta)
    if not appended:
        return out
    detector = threshold["detector"]
    buffer = _buffer_name(detector)
    if buffer is None or int(detector[COUNTERS[buffer]]) != int(appended["from"]):
        raise DeltaError(f"threshold delta starts after value {appended['from']}, the state is elsewhere")
    joined = np.concatenate((np.asarray(detector[buffer], dtype=np.float64), appended["new"]))
    if len(joined) < int(appended["length"]):
        raise DeltaError("threshold delta holds fewer values than it claims")
    out["detector"] = dict(delta["detector"], **{buffer: joined[len(joined) - int(appended["length"]):]})
    return out
