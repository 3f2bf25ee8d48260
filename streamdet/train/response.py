"""The `response` attribution: how a shift in each channel shows up in every channel's standardised contribution.

A reconstruction or forecast model spreads one channel's anomaly over others: PCA's residual of a shifted channel
lands on every channel its component mixes in, an autoencoder's latent code moves and every output with it. Ranking
each channel's own standardised contribution (`tail`) then names the channels the anomaly leaked into. Here the
bundle's model is probed at training time, like an occlusion test run once: RESPONSE_SHIFT channel spreads are added
to one channel at a time over the last scored rows of clean validation windows, and the mean rise of the
standardised contributions at the last row (`tail` for `response`, `quantile` surprise for `response_quantile`) is
that channel's response column. An alert then explains its
standardised contributions as a non-negative mix of the columns (pipeline/attribution.unmixed) and ranks channels
by their weight in the mix.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..pipeline.attribution import attributed
from ..pipeline.stride import effective_stride
from .inject import channel_spread

RESPONSE_WINDOWS = 16  # clean validation windows probed per channel
RESPONSE_SHIFT = 4.0  # the probe: this many channel spreads (train/inject.channel_spread) added to one channel
BATCH = 256


def fit_response(served, tails: Sequence[np.ndarray], window: int, stride: int, context: int, base: dict,
                 method: str = "response") -> dict:
    """The `method` record: the `base` record (how each channel's contribution is standardised: `tail` or
    `quantile`) and the response matrix [C, C] (column j: the mean rise of every channel's standardised contribution
    when channel j alone is shifted)."""
    clean = _clean_windows(tails, window)  # [K, L, C]
    k, length, n = clean.shape
    shifted_rows = min(effective_stride(stride, window, context), window)
    spread = channel_spread(np.concatenate([np.asarray(t, dtype=np.float64) for t in tails]))
    probes = np.repeat(clean[None], n, axis=0)  # [C, K, L, C]
    for j in range(n):
        probes[j, :, length - shifted_rows:, j] += RESPONSE_SHIFT * spread[j]
    still = attributed(_last_contributions(served, clean), base)  # [K, C]
    moved = attributed(_last_contributions(served, probes.reshape(n * k, length, n)), base).reshape(n, k, n)
    response = np.maximum(moved - still[None], 0.0).mean(axis=1).T  # [observed C, shifted C]
    return {"method": method, "base": base, "response": [[float(v) for v in row] for row in response]}


def _clean_windows(tails: Sequence[np.ndarray], window: int) -> np.ndarray:
    """RESPONSE_WINDOWS windows spread evenly over the tails long enough to hold one."""
    ends = [(i, e) for i, t in enumerate(tails) if len(t) >= window for e in range(window, len(t) + 1)]
    if not ends:
        raise ValueError(f"no validation tail holds a window of {window} rows; the response attribution needs one")
    pick = np.linspace(0, len(ends) - 1, min(RESPONSE_WINDOWS, len(ends))).round().astype(int)
    return np.stack([np.asarray(tails[ends[p][0]][ends[p][1] - window:ends[p][1]], dtype=np.float32) for p in pick])


def _last_contributions(served, windows: np.ndarray) -> np.ndarray:
    """Per-channel contributions [N, C] at the last row of each raw window [N, L, C]."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), BATCH):
            _, contrib = served(torch.from_numpy(np.ascontiguousarray(windows[i:i + BATCH], dtype=np.float32)))
            out.append(contrib[:, -1].numpy().astype(np.float64))
    return np.concatenate(out)
