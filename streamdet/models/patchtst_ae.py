"""PatchTST-style patch autoencoder (after Nie et al., ICLR 2023): channel-independent patches through a transformer.

Each channel is treated as its own univariate series (channel independence: weights shared across channels, no
cross-channel mixing), cut into patches of `patch_len` steps every `patch_stride` steps (`patch_mode: sliding`
overlaps them; `disjoint` sets the stride to the patch length). Patches are embedded through a narrow bottleneck,
related by a transformer, and decoded back to patches; overlapping reconstructions are averaged back onto the steps.
Score = per-step squared reconstruction error (mean over channels); contributions per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import PositionalEncoding, TransformerStack, patch_starts


@dataclass(frozen=True)
class PatchTSTParams(Hyper):
    patch_len: int = 16
    patch_stride: int = 8
    patch_mode: str = "sliding"
    width: int = 8
    heads: int = 2
    layers: int = 2
    ff: int = 64
    dropout: float = 0.1

    def check(self) -> None:
        require(self.patch_mode in ("sliding", "disjoint"), "patch_mode", "must be sliding or disjoint",
                self.patch_mode)
        require(self.patch_len >= 1, "patch_len", "must be >= 1", self.patch_len)
        require(self.patch_stride >= 1, "patch_stride", "must be >= 1", self.patch_stride)
        require_heads_divide(self.width, self.heads)


class PatchTSTAutoencoder(Detector):
    name = "patchtst_ae"
    Params = PatchTSTParams
    presets = {"tiny": {"patch_len": 8, "patch_stride": 4, "width": 4, "layers": 1, "ff": 16, "dropout": 0.0}}

    def __init__(self, n_channels: int, window: int, hp: PatchTSTParams = PatchTSTParams()):
        super().__init__(n_channels, window, hp)
        patch_len, patch_mode, width, heads, ff = hp.patch_len, hp.patch_mode, hp.width, hp.heads, hp.ff
        patch_stride, layers, dropout = hp.patch_stride, hp.layers, hp.dropout
        patch_len = min(patch_len, window)
        stride = patch_len if patch_mode == "disjoint" else min(patch_stride, patch_len)
        starts = patch_starts(window, patch_len, stride)  # [P]
        index = starts[:, None] + torch.arange(patch_len)[None, :]  # [P, patch_len]
        self.register_buffer("index", index)
        self.register_buffer("coverage", torch.bincount(index.reshape(-1), minlength=window).float())  # [L]
        self.patch_len = patch_len
        self.embed = nn.Linear(patch_len, width)
        self.position = PositionalEncoding(width, len(starts))
        self.encoder = TransformerStack(width, heads, ff, layers, dropout)
        self.decode = nn.Linear(width, patch_len)

    def reconstruct(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        series = x.permute(0, 2, 1).reshape(B * C, L)  # [B*C, L]: channel independence
        patches = series[:, self.index]  # [B*C, P, patch_len]
        h = self.encoder(self.position(self.embed(patches)))  # [B*C, P, D]
        out = self.decode(h)  # [B*C, P, patch_len]
        # every patch value is added onto its step: index [P*patch_len], values [B*C, P*patch_len] -> [B*C, L]
        summed = torch.zeros_like(series).index_add_(1, self.index.reshape(-1), out.reshape(B * C, -1))
        rebuilt = summed / self.coverage  # [B*C, L], overlapping patches averaged
        return rebuilt.reshape(B, C, L).permute(0, 2, 1)  # [B, L, C]

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.reconstruct(x)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        return ((self.reconstruct(x) - x) ** 2).mean()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        err = (self.reconstruct(x) - x) ** 2  # [B, L, C]
        return err.mean(dim=-1), err
