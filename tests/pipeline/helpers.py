"""Small real components for pipeline tests: a torch detector module and a bundle-like object."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson
import torch


class DeviationDetector(torch.nn.Module):
    """Scores each step by its squared deviation from the window mean; contributions are the per-channel terms.

    Row independent and cheap, so tests can predict which points score high.
    """

    def forward(self, x: torch.Tensor):
        contrib = (x - x.mean(dim=1, keepdim=True)) ** 2  # [B, L, C]
        return contrib.mean(dim=-1), contrib  # [B, L], [B, L, C]


class LastValueDetector(torch.nn.Module):
    """Score = the first channel's value itself; lets a test dictate exact scores through the input."""

    def forward(self, x: torch.Tensor):
        contrib = x.abs()  # [B, L, C]
        return x[:, :, 0], contrib  # [B, L], [B, L, C]


@dataclass
class FakeBundle:
    """The attributes engine.Pipeline needs from streamdet.bundle.Bundle."""

    module: torch.nn.Module
    channels: tuple
    window: int
    calibration: dict = field(default_factory=dict)
    model_name: str = "test_model"
    sha256: str = "0" * 64
    path: str = "fake.pt"

    @property
    def mean(self) -> np.ndarray:
        """The training mean the start-up probe scores (bundle/probe.py)."""
        return np.zeros(len(self.channels), dtype=np.float32)


def exponential_calibration(n: int = 4000, seed: int = 0, init_level: float = 0.98) -> dict:
    """Calibration in the bundle format from Exp(1) scores."""
    scores = np.random.default_rng(seed).exponential(size=n)
    t = float(np.quantile(scores, init_level))
    return {"n": n, "pot": {"init_threshold": t, "n_init": n, "peaks": (scores[scores > t] - t).tolist()},
            "sample": scores[:: max(1, n // 2000)].tolist()}


def record(entity: str, ts: float, values) -> bytes:
    return orjson.dumps({"entity": entity, "ts": ts, "values": list(map(float, values))})
