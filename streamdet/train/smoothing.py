"""Score smoothing as a candidate of `model.name: auto`: kept only where validation says so (train/select.py).

A causal moving average of the detector's per-step scores over `k` steps: anomalies in SMD/ASD-like data last tens of
rows, so averaging lets a sustained deviation outrank a one-row blip. Causal and inside the window, so it changes
the model's context (k - 1 more rows before a step), which training records and the pipeline's stride respects.
Contributions are passed through unchanged (they explain the step, not the average).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


class SmoothedScores(nn.Module):
    """Wraps a fitted detector: forward(x [B, L, C]) -> (moving-average scores [B, L], contributions [B, L, C])."""

    def __init__(self, inner: nn.Module, k: int):
        super().__init__()
        if k < 2:
            raise ValueError(f"smooth: k must be >= 2, got {k}")
        self.inner = inner
        self.k = int(k)
        self.window = int(inner.window)
        self.name = str(getattr(inner, "name", type(inner).__name__))
        self.span = int(getattr(inner, "span", 1)) + self.k - 1  # rows before a step its score reads, plus one
        self.trainable = bool(getattr(inner, "trainable", True))  # stride-dependence of the scores (select.py)

    def hparams(self) -> dict:
        inner = self.inner.hparams() if hasattr(self.inner, "hparams") else {}
        return {**inner, "smooth": self.k}

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        scores, contrib = self.inner(x)  # [B, L], [B, L, C]
        B = scores.shape[0]
        padded = torch.cat([scores[:, :1].expand(B, self.k - 1), scores], dim=1)  # [B, L + k - 1]
        return padded.unfold(1, self.k, 1).mean(dim=-1), contrib  # [B, L, k] -> [B, L]
