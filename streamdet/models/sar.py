"""Spatial-association transformer: attention across channels, not time, to learn how metrics move together.

The window is divided into `segments` series divisions. Within each division every channel is a token (its
values over the division, embedded), and attention across channels yields a channel x channel association. A
learned prior association stands for how channels normally relate. Anomalies often show as association decline:
a metric stops moving with its usual partners. Reconstruction happens in the association space (each channel is
rebuilt from the channels it attends to), so an error there means the usual relations no longer explain the data.
Score per step and channel = squared reconstruction error + `assoc_weight` x the association change of that
channel's row (symmetric KL to the prior) in that division; contributions per channel come out directly.
Shapes: besides B L C D H, S divisions of l steps each, E = D / H per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import kl_rows, pad_to_multiple


@dataclass(frozen=True)
class SARParams(Hyper):
    segments: int = 5
    width: int = 32
    heads: int = 2
    assoc_weight: float = 0.5
    dropout: float = 0.1

    def check(self) -> None:
        require(self.segments >= 1, "segments", "must be >= 1", self.segments)
        require_heads_divide(self.width, self.heads)


class SpatialAssociationTransformer(Detector):
    name = "sar"
    Params = SARParams
    presets = {"tiny": {"segments": 4, "width": 16, "heads": 1, "dropout": 0.0}}

    def __init__(self, n_channels: int, window: int, hp: SARParams = SARParams()):
        super().__init__(n_channels, window, hp)
        segments, width, heads, assoc_weight, dropout = hp.segments, hp.width, hp.heads, hp.assoc_weight, hp.dropout
        self.segment_len = -(-window // max(1, min(segments, window)))
        self.n_segments = -(-window // self.segment_len)
        self.heads = heads
        self.head_width = width // heads
        self.embed = nn.Linear(self.segment_len, width)
        self.channel_code = nn.Parameter(torch.randn(n_channels, width) * 0.1)  # which metric a token is
        self.qk = nn.Linear(width, 2 * width)
        self.value = nn.Linear(width, width)
        self.decode = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(width, self.segment_len))
        self.prior_logits = nn.Parameter(torch.zeros(heads, n_channels, n_channels))
        self.assoc_weight = assoc_weight

    def associate(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x [B, L, C] -> (reconstruction [B, L, C], association [B, S, H, C, C], prior [H, C, C])."""
        B, L, C = x.shape
        padded = pad_to_multiple(x, self.segment_len)  # [B, S*l, C]
        tokens = padded.reshape(B, self.n_segments, self.segment_len, C).permute(0, 1, 3, 2)  # [B, S, C, l]
        h = self.embed(tokens) + self.channel_code  # [B, S, C, D]
        H, E = self.heads, self.head_width
        qk = self.qk(h).reshape(B, self.n_segments, C, 2, H, E).permute(3, 0, 1, 4, 2, 5)  # [2, B, S, H, C, E]
        assoc = torch.softmax(qk[0] @ qk[1].transpose(-1, -2) / math.sqrt(E), dim=-1)  # [B, S, H, C, C]
        v = self.value(h).reshape(B, self.n_segments, C, H, E).permute(0, 1, 3, 2, 4)  # [B, S, H, C, E]
        mixed = (assoc @ v).permute(0, 1, 3, 2, 4).reshape(B, self.n_segments, C, H * E)  # [B, S, C, D]
        rebuilt = self.decode(mixed).permute(0, 1, 3, 2)  # [B, S, l, C]
        rebuilt = rebuilt.reshape(B, self.n_segments * self.segment_len, C)  # [B, S*l, C]
        return rebuilt[:, :L], assoc, torch.softmax(self.prior_logits, dim=-1)

    def change(self, assoc: Tensor, prior: Tensor) -> Tensor:
        """Per division and channel: symmetric KL of the channel's association row to the prior -> [B, S, C]."""
        p = prior.unsqueeze(0).unsqueeze(0)  # [1, 1, H, C, C]
        return (kl_rows(assoc, p) + kl_rows(p, assoc)).mean(dim=2)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        rebuilt, assoc, prior = self.associate(x)
        return ((rebuilt - x) ** 2).mean() + self.assoc_weight * self.change(assoc, prior).mean()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        rebuilt, assoc, prior = self.associate(x)
        change = self.change(assoc, prior).repeat_interleave(self.segment_len, dim=1)[:, :L]  # [B, L, C]
        contrib = (rebuilt - x) ** 2 + self.assoc_weight * change.clamp(min=0.0)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
