"""Synthetic anomalies injected into a validation tail, sized from that tail's own scale (model selection only).

`model.name: auto` ranks candidates by how well they find these in held-out training data, so no test label ever
takes part in a choice. Kinds: the synthetic generator's five (spike, noise, drift = a constant offset, trend = a
ramp, frequency = the segment replayed faster or slower) plus `level_shift` (a long, large step) and
`broken_correlation` (one of two strongly correlated channels replays another stretch of itself: each channel stays
within its normal range, only their relation breaks). Sizes are multiples of each channel's robust spread in the
tail, so an anomaly is equally visible on a byte counter and on a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("spike", "noise", "drift", "trend", "frequency", "level_shift", "broken_correlation")
LENGTHS = {"spike": (1, 3), "noise": (20, 50), "drift": (20, 60), "trend": (30, 80), "frequency": (40, 90),
           "level_shift": (60, 150), "broken_correlation": (40, 100)}


INJECTED_FRACTION = 0.05  # share of a tail's rows made anomalous: the order of labelled rates in public benchmarks,
# so that precision at an operating threshold means what it will mean live (a denser injection favours lax settings)


@dataclass
class Injected:
    values: np.ndarray  # [T, C] float32, the tail with anomalies added
    labels: np.ndarray  # [T] int8
    segments: list  # [(start, end_exclusive, kind, channels)]


def channel_spread(x: np.ndarray) -> np.ndarray:
    """Robust per-channel spread: IQR / 1.349, at least a sixth of the central 98 % range, never zero."""
    q1, q25, q75, q99 = np.quantile(x, (0.01, 0.25, 0.75, 0.99), axis=0)
    spread = np.maximum((q75 - q25) / 1.349, (q99 - q1) / 6.0)
    return np.where(spread > 0, spread, np.maximum(np.abs(x).max(axis=0) * 0.01, 1e-3))


def default_count(n_rows: int, margin: int = 0) -> int:
    """Anomalies that cover about INJECTED_FRACTION of the rows after the margin (at least one)."""
    mean_length = np.mean([(lo + hi) / 2 for lo, hi in LENGTHS.values()])
    return max(1, int(round(INJECTED_FRACTION * max(0, n_rows - margin) / mean_length)))


def injection_seed(seed: int, tail: int, copy: int, tails: int) -> int:
    """The seed of injected copy `copy` of validation tail `tail` (of `tails`), distinct for every (seed, tail, copy)
    of a run. The seeds were seed * 1000 + tail * 10 + copy, so a short tail's 11th to 14th copies drew with the next
    tail's seeds (the same draw on two tails); such a seed is replaced by one from a range of its own, and every
    other keeps its value (the documented rows were drawn with them)."""
    taken_by = tail + copy // 10  # the tail whose own copies use seed * 1000 + tail * 10 + copy too
    if taken_by == tail or taken_by >= tails:
        return seed * 1000 + tail * 10 + copy
    return 2**40 + (seed * 1_000_000 + tail) * 1000 + copy


def inject(tail: np.ndarray, seed: int, kinds: tuple[str, ...] = KINDS, count: int = 0,
           margin: int = 0, first_kind: int = 0) -> Injected:
    """`count` anomalies (default: default_count) in equal slots of the tail, none in its first `margin` rows;
    kinds cycle from `first_kind`, so successive copies of a tail get different kinds."""
    rng = np.random.default_rng(seed)
    x = np.array(tail, dtype=np.float64)
    spread = channel_spread(x)
    labels = np.zeros(len(x), np.int8)
    count = count or default_count(len(x), margin)
    usable = len(x) - margin
    slot = usable // count
    segments = []
    for i in range(count):
        kind = kinds[(first_kind + i) % len(kinds)]
        lo, hi = LENGTHS[kind]
        length = int(rng.integers(lo, max(lo, min(hi, slot // 2)) + 1))
        length = max(1, min(length, len(x) - 2))  # a tail shorter than the kind's shortest length (a NAB file's)
        start = margin + i * slot + int(rng.integers(0, max(1, slot - length)))
        start = int(np.clip(start, 1, len(x) - length - 1))
        channels = _apply(rng, x, kind, start, length, spread)
        labels[start:start + length] = 1
        segments.append((start, start + length, kind, channels))
    return Injected(x.astype(np.float32), labels, segments)


def _channels(rng, n_channels: int) -> list[int]:
    k = int(rng.integers(1, max(1, n_channels // 4) + 1))
    return sorted(rng.choice(n_channels, size=k, replace=False).tolist())


def _apply(rng, x: np.ndarray, kind: str, start: int, length: int, spread: np.ndarray) -> list[int]:
    seg = slice(start, start + length)
    if kind == "broken_correlation":
        return _break_correlation(rng, x, start, length)
    channels = _channels(rng, x.shape[1])
    for c in channels:
        sign, s = rng.choice([-1.0, 1.0]), spread[c]
        if kind == "spike":
            x[seg, c] += sign * rng.uniform(4, 7) * s
        elif kind == "noise":
            x[seg, c] += rng.normal(0, rng.uniform(1.5, 3.0) * s, length)
        elif kind == "drift":
            x[seg, c] += sign * rng.uniform(1.5, 3.0) * s
        elif kind == "trend":
            x[seg, c] += sign * np.linspace(0, rng.uniform(3.0, 5.0), length) * s
        elif kind == "level_shift":
            x[seg, c] += sign * rng.uniform(3.0, 5.0) * s
        elif kind == "frequency":
            factor = rng.choice([0.4, 2.5])
            source = start + (np.arange(length) * factor).astype(int) % max(1, len(x) - start)
            x[seg, c] = x[np.clip(source, 0, len(x) - 1), c]
    return channels


def _break_correlation(rng, x: np.ndarray, start: int, length: int) -> list[int]:
    """Replace the segment of one channel of the most correlated pair by another stretch of the same channel."""
    c = _correlated_channel(x, rng)
    candidates = [s for s in range(0, len(x) - length) if abs(s - start) >= length]
    source = int(rng.choice(candidates)) if candidates else 0
    x[start:start + length, c] = x[source:source + length, c]
    return [c]


def _correlated_channel(x: np.ndarray, rng) -> int:
    varying = np.flatnonzero(x.std(axis=0) > 1e-12)
    if varying.size < 2:
        return int(rng.integers(0, x.shape[1]))
    corr = np.abs(np.corrcoef(x[:, varying].T))  # [V, V]
    np.fill_diagonal(corr, 0.0)
    corr = np.nan_to_num(corr)
    i, _ = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(varying[i])
