"""Patching around any sequence model (`model.patch: {size, stride}`), after the patch-based framework of PatchTST.

The window [B, L, C] is cut into P patches of `size` steps every `stride` steps (sliding when stride < size,
disjoint when equal; the last patch is aligned to the window's end so every step is covered). Each patch becomes one
token of size x C features, so the wrapped model sees a shorter sequence [B, P, size*C] of richer steps: a
recurrent or attention model then relates patches (local shapes) instead of single points, and its cost in sequence
length drops by `stride`. Its per-token contributions [B, P, size*C] are unfolded back onto the steps each patch
covered and averaged where patches overlap, so every point and channel gets a score: score = mean over channels.
Labels for semi-supervised models follow the patch (a patch is anomalous when any of its steps is).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Detector
from .layers import patch_starts


def count_patches(window: int, size: int, stride: int) -> int:
    return int(patch_starts(window, size, stride or size).numel())


def check_patch(size: int, stride: int, window: int) -> None:
    """model.patch against model.window: 0 is off; otherwise 1 <= stride <= size < window and >= 2 patches."""
    if size == 0:
        if stride:
            raise ConfigError(f"model.patch.stride: set without model.patch.size, got {stride}")
        return
    if size >= window:
        raise ConfigError(f"model.patch.size: must be < model.window={window}, got {size}")
    if stride > size:
        raise ConfigError(f"model.patch.stride: must be <= model.patch.size={size} (0 = size), got {stride}")


class Patched(Detector):
    """`inner` (built for size*C channels and P steps) applied to the patches of each window."""

    __jit_ignored_attributes__ = ["name", "trainable", "phases"]  # plain Python facts about the model, never scored with

    def __init__(self, inner: Detector, n_channels: int, window: int, size: int, stride: int):
        super().__init__(n_channels, window)
        stride = stride or size
        starts = patch_starts(window, size, stride)  # [P]
        index = starts[:, None] + torch.arange(size)[None, :]  # [P, size]
        self.register_buffer("index", index)
        self.register_buffer("coverage", torch.bincount(index.reshape(-1), minlength=window).float())  # [L]
        self.inner = inner
        self.name = inner.name
        self.trainable = inner.trainable
        self.phases = inner.phases
        self.size = size
        self.stride = stride
        self.n_patches = int(starts.numel())

    def tokens(self, x: Tensor) -> Tensor:
        """[B, L, C] -> [B, P, size*C]: each patch's steps side by side."""
        B, L, C = x.shape
        return x[:, self.index].reshape(B, self.n_patches, self.size * C)  # [B, P, size, C] -> [B, P, size*C]

    def unpatch(self, per_token: Tensor) -> Tensor:
        """[B, P, size*C] -> [B, L, C]: each value back on its step, overlaps averaged."""
        B = per_token.shape[0]
        C = self.n_channels
        flat = per_token.reshape(B, self.n_patches * self.size, C)  # [B, P*size, C]
        summed = torch.zeros(B, self.window, C, device=per_token.device, dtype=per_token.dtype)
        summed = summed.index_add(1, self.index.reshape(-1), flat)
        return summed / self.coverage.unsqueeze(-1)  # [B, L, C]

    def expected(self, x: Tensor) -> Optional[Tensor]:
        inner = self.inner.expected(self.tokens(x))
        return None if inner is None else self.unpatch(inner)

    def prepare(self, train: Tensor) -> None:
        self.inner.prepare(self.tokens(train))

    def fit_validation(self, val: Tensor) -> None:
        self.inner.fit_validation(self.tokens(val))

    def patch_labels(self, labels: Optional[Tensor]) -> Optional[Tensor]:
        return None if labels is None else labels[:, self.index].amax(dim=-1)  # [B, L] -> [B, P]

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        return self.inner.loss(self.tokens(x), epoch, self.patch_labels(labels))

    def phase_loss(self, x: Tensor, epoch: int, phase: int, labels: Optional[Tensor] = None) -> Tensor:
        return self.inner.phase_loss(self.tokens(x), epoch, phase, self.patch_labels(labels))

    def phase_parameters(self, phase: int) -> List[nn.Parameter]:
        return self.inner.phase_parameters(phase)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        _, per_token = self.inner(self.tokens(x))  # [B, P, size*C]
        contrib = self.unpatch(per_token)  # [B, L, C]
        return contrib.mean(dim=-1), contrib

    def hparams(self) -> Dict:
        return {**self.inner.hparams(), "patch": {"size": self.size, "stride": self.stride}}
