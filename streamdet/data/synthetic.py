"""A seedable multivariate generator with labelled anomalies of five kinds (data.dataset: synthetic).

Normal behaviour: channels come in correlated groups; each group follows one latent signal (two seasonal terms,
a slow trend and a random walk), and each channel is a scaled, offset copy of it plus its own noise, so that models
can learn cross-channel structure. Anomalies are injected into a few channels of the group they hit:

- spike: 1-3 points far off the normal range
- noise: a burst of extra variance
- drift: a mean shift that persists over the segment
- trend: a deviation growing linearly over the segment
- frequency: the seasonal period changes over the segment

Each injected segment is labelled (test labels, and train labels when `train_anomalies` > 0, for the
semi-supervised sd_mae), with its kind and its channels recorded (`Series.segment_kinds`, `Series.interpretation`).
"""

from __future__ import annotations

import numpy as np

from .series import Series

KINDS = ("spike", "noise", "drift", "trend", "frequency")
GROUP_SIZE = 4
# Segment lengths (rows) per kind: ten segments in 3,000 test rows label ~12 % of them (NAB: 9 %).
_LENGTHS = {"spike": (1, 3), "noise": (10, 30), "drift": (20, 50), "trend": (30, 60), "frequency": (50, 100)}


def generate(entity: str = "synthetic-0", *, seed: int = 0, n_channels: int = 8, train_length: int = 3000,
             test_length: int = 3000, kinds: tuple[str, ...] = KINDS, test_anomalies: int = 10,
             train_anomalies: int = 0) -> Series:
    """One entity: a clean train split (unless train_anomalies > 0) and a test split with `test_anomalies` segments
    cycling through `kinds`."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; known: {KINDS}")
    rng = np.random.default_rng(seed)
    shape = _ChannelShape(rng, n_channels)
    train = shape.normal(rng, 0, train_length)
    test = shape.normal(rng, train_length, test_length)
    train_labels = None
    train_kinds: list = []
    if train_anomalies:
        train_labels, train_kinds, _ = _inject(rng, shape, train, 0, kinds, train_anomalies)
    test_labels, test_kinds, interp = _inject(rng, shape, test, train_length, kinds, test_anomalies)
    channels = [f"g{c // GROUP_SIZE}_m{c % GROUP_SIZE}" for c in range(n_channels)]
    return Series(entity, channels, train, test, test_labels, train_labels=train_labels, interpretation=interp,
                  segment_kinds=test_kinds, train_segment_kinds=train_kinds)


class _ChannelShape:
    """The normal process: per group a latent signal; per channel a gain, an offset and a noise level."""

    def __init__(self, rng: np.random.Generator, n_channels: int):
        self.n_channels = n_channels
        self.group = np.arange(n_channels) // GROUP_SIZE
        n_groups = int(self.group.max()) + 1
        self.period = rng.uniform(40, 160, n_groups)
        self.period2 = rng.uniform(300, 900, n_groups)
        self.phase = rng.uniform(0, 2 * np.pi, n_groups)
        self.trend = rng.uniform(-2e-5, 2e-5, n_groups)
        self.gain = rng.uniform(0.5, 1.5, n_channels) * rng.choice([-1.0, 1.0], n_channels)
        self.offset = rng.uniform(-1, 1, n_channels)
        self.noise = rng.uniform(0.05, 0.15, n_channels)

    def latent(self, t: np.ndarray, g: int, period_scale: float = 1.0) -> np.ndarray:
        return (np.sin(2 * np.pi * t / (self.period[g] * period_scale) + self.phase[g])
                + 0.5 * np.sin(2 * np.pi * t / self.period2[g]) + self.trend[g] * t)

    def normal(self, rng: np.random.Generator, t0: int, length: int) -> np.ndarray:
        t = np.arange(t0, t0 + length, dtype=np.float64)
        walk = np.cumsum(rng.normal(0, 0.003, (length, int(self.group.max()) + 1)), axis=0)
        out = np.empty((length, self.n_channels), dtype=np.float64)
        for c in range(self.n_channels):
            g = self.group[c]
            base = self.latent(t, g) + walk[:, g]
            out[:, c] = self.gain[c] * base + self.offset[c] + rng.normal(0, self.noise[c], length)
        return out.astype(np.float32)


def _inject(rng, shape: _ChannelShape, x: np.ndarray, t0: int, kinds, count: int):
    """Inject `count` segments in equal slots of x (in place); returns labels, (start, end, kind), interpretation."""
    labels = np.zeros(len(x), dtype=np.int8)
    segment_kinds, interp = [], []
    slot = len(x) // (count + 1)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        lo, hi = _LENGTHS[kind]
        length = int(rng.integers(lo, min(hi, max(lo + 1, slot // 2)) + 1))
        start = (i + 1) * slot - length // 2 + int(rng.integers(-slot // 4, slot // 4 + 1))
        start = int(np.clip(start, 1, len(x) - length - 1))
        channels = _pick_channels(rng, shape)
        _apply(rng, shape, x, kind, start, length, channels, t0)
        labels[start:start + length] = 1
        segment_kinds.append((start, start + length, kind))
        interp.append((start, start + length, channels))
    return labels, segment_kinds, interp


def _pick_channels(rng, shape: _ChannelShape) -> list[int]:
    group = int(rng.integers(0, shape.group.max() + 1))
    members = np.flatnonzero(shape.group == group)
    k = int(rng.integers(1, len(members) + 1))
    return sorted(rng.choice(members, size=k, replace=False).tolist())


def _apply(rng, shape: _ChannelShape, x, kind: str, start: int, length: int, channels: list[int], t0: int) -> None:
    seg = slice(start, start + length)
    for c in channels:
        scale = abs(shape.gain[c]) + shape.noise[c]
        if kind == "spike":
            x[seg, c] += rng.choice([-1.0, 1.0]) * rng.uniform(4, 7) * scale
        elif kind == "noise":
            x[seg, c] += rng.normal(0, 4 * shape.noise[c] + 0.3 * scale, length)
        elif kind == "drift":
            x[seg, c] += rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0) * scale
        elif kind == "trend":
            x[seg, c] += rng.choice([-1.0, 1.0]) * np.linspace(0, rng.uniform(2.0, 3.5), length) * scale
        elif kind == "frequency":
            t = np.arange(t0 + start, t0 + start + length, dtype=np.float64)
            g = shape.group[c]
            factor = rng.choice([0.3, 3.0])
            x[seg, c] += shape.gain[c] * (shape.latent(t, g, factor) - shape.latent(t, g))
