"""Spatial-association transformer: attention across channels, not time, to learn how metrics relate.

After SARAD (Dai et al., NeurIPS 2024; the brief's SAR76).

Series division: the window is cut into `segments` divisions, so associations are followed as they change over time.
Within each division every channel is a token (its values over the division, embedded with a code saying which
metric it is), and attention across channels yields a channel x channel association. A channel never attends to
itself (the diagonal is masked), so it can only be explained by the others: the model cannot reduce to a
per-channel autoencoder. Reconstruction happens in the association reduction space: the other channels' values are
first projected to `reduction` dimensions (a bottleneck narrower than the token width), mixed by the association,
and each channel is rebuilt from that mixture alone.
A learned prior association (per head, channel x channel) stands for how channels normally relate. Minimax, as the
Anomaly Transformer does over time: the prior is pulled towards the (detached) association, the association is
pushed away from the (detached) prior, weighted by `k`, next to the reconstruction. Normal relations stay far from
the generic prior; an anomalous channel's association descends towards it ("association descending").
Score per step and channel = squared reconstruction error x ((1 - assoc_weight) + assoc_weight x C x
softmax over channels of (-discrepancy)) in that division: channels whose association descended weigh more, which
also makes them the explanation. The softmax runs over channels, not time, so a step's weight never depends on
where it sits in the window (what the daemon's stride scoring needs).
Shapes: besides B L C D H, S divisions of l steps each, E = D / H per head, R = reduction / H.
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
    reduction: int = 8  # bottleneck of the association reduction space (< width)
    k: float = 3.0  # weight of the minimax association terms
    assoc_weight: float = 0.5  # share of the association-descent weighting in the score (0 = reconstruction only)
    dropout: float = 0.1

    def check(self) -> None:
        require(self.segments >= 1, "segments", "must be >= 1", self.segments)
        require_heads_divide(self.width, self.heads)
        require(1 <= self.reduction < self.width and self.reduction % self.heads == 0, "reduction",
                f"must be in [1, width={self.width}) and divisible by heads={self.heads}", self.reduction)
        require(0.0 <= self.assoc_weight <= 1.0, "assoc_weight", "must be in [0, 1]", self.assoc_weight)


class SpatialAssociationTransformer(Detector):
    name = "sar"
    Params = SARParams
    presets = {"tiny": {"segments": 4, "width": 16, "heads": 1, "reduction": 4, "dropout": 0.0}}

    def __init__(self, n_channels: int, window: int, hp: SARParams = SARParams()):
        super().__init__(n_channels, window, hp)
        self.segment_len = -(-window // max(1, min(hp.segments, window)))
        self.n_segments = -(-window // self.segment_len)
        self.heads = hp.heads
        self.head_width = hp.width // hp.heads
        self.embed = nn.Linear(self.segment_len, hp.width)
        self.channel_code = nn.Parameter(torch.randn(n_channels, hp.width) * 0.1)  # which metric a token is
        self.qk = nn.Linear(hp.width, 2 * hp.width)
        self.value = nn.Linear(hp.width, hp.reduction)  # into the association reduction space
        self.decode = nn.Sequential(nn.Linear(hp.reduction, hp.width), nn.GELU(), nn.Dropout(hp.dropout),
                                    nn.Linear(hp.width, self.segment_len))
        self.prior_logits = nn.Parameter(torch.zeros(hp.heads, n_channels, n_channels))
        self.register_buffer("not_self", torch.eye(n_channels) * -1e9)  # added to logits: no attention to oneself
        self.k = hp.k
        self.assoc_weight = hp.assoc_weight

    def prior(self) -> Tensor:
        return torch.softmax(self.prior_logits + self.not_self, dim=-1)  # [H, C, C]

    def associate(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x [B, L, C] -> (reconstruction [B, L, C], association [B, S, H, C, C] with a zero diagonal)."""
        B, L, C = x.shape
        padded = pad_to_multiple(x, self.segment_len)  # [B, S*l, C]
        tokens = padded.reshape(B, self.n_segments, self.segment_len, C).permute(0, 1, 3, 2)  # [B, S, C, l]
        h = self.embed(tokens) + self.channel_code  # [B, S, C, D]
        H, E = self.heads, self.head_width
        qk = self.qk(h).reshape(B, self.n_segments, C, 2, H, E).permute(3, 0, 1, 4, 2, 5)  # [2, B, S, H, C, E]
        logits = qk[0] @ qk[1].transpose(-1, -2) / math.sqrt(E) + self.not_self  # [B, S, H, C, C]
        assoc = torch.softmax(logits, dim=-1)
        v = self.value(h).reshape(B, self.n_segments, C, H, -1).permute(0, 1, 3, 2, 4)  # [B, S, H, C, R]
        mixed = (assoc @ v).permute(0, 1, 3, 2, 4).reshape(B, self.n_segments, C, -1)  # [B, S, C, H*R]
        rebuilt = self.decode(mixed).permute(0, 1, 3, 2)  # [B, S, l, C]
        rebuilt = rebuilt.reshape(B, self.n_segments * self.segment_len, C)  # [B, S*l, C]
        return rebuilt[:, :L], assoc

    def discrepancy(self, assoc: Tensor, prior: Tensor) -> Tensor:
        """Per division and channel: symmetric KL between the channel's association row and the prior -> [B, S, C]."""
        p = prior.unsqueeze(0).unsqueeze(0)  # [1, 1, H, C, C]
        return (kl_rows(assoc, p) + kl_rows(p, assoc)).mean(dim=2)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        rebuilt, assoc = self.associate(x)
        prior = self.prior()
        series_term = self.discrepancy(assoc, prior.detach()).mean()  # maximised: moves the association only
        prior_term = self.discrepancy(assoc.detach(), prior).mean()  # minimised: moves the prior only
        return ((rebuilt - x) ** 2).mean() + self.k * (prior_term - series_term)

    def weights(self, assoc: Tensor) -> Tensor:
        """Association-descent weights per division and channel [B, S, C], mean 1 over channels at assoc_weight 1."""
        descent = torch.softmax(-self.discrepancy(assoc, self.prior()), dim=-1) * assoc.shape[-1]
        return (1.0 - self.assoc_weight) + self.assoc_weight * descent

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.associate(x)[0]

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        L = x.shape[1]
        rebuilt, assoc = self.associate(x)
        weight = self.weights(assoc).repeat_interleave(self.segment_len, dim=1)[:, :L]  # [B, L, C]
        contrib = (rebuilt - x) ** 2 * weight  # [B, L, C]
        return contrib.mean(dim=-1), contrib
