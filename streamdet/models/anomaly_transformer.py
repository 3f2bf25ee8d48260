"""Anomaly Transformer (Xu et al., ICLR 2022): association discrepancy with a minimax strategy.

Each layer's anomaly-attention computes two associations per step: the series association (ordinary softmax
attention) and a prior association (a Gaussian kernel over time distance with a learnable width sigma per head and
step). Normal steps attend widely across the series; anomalies, being rare, attend mostly to their neighbours, so
their series association stays close to the local prior: a small discrepancy is suspicious.
Minimax, in one loss with stop-gradients: the prior is pulled towards the (detached) series association, and the
series association is pushed away from the (detached) prior, both next to the reconstruction objective.
Score = softmax over the window of (-discrepancy x temperature) x per-step reconstruction error, as the paper's
reference code computes it (temperature 50 multiplies the summed symmetric KL of every layer before the softmax).
`association_weighting: mild` divides by the temperature instead (a weighting 2,500 times milder that makes the
score nearly a transformer autoencoder's reconstruction error): an explicit option, measured side by side in
docs/models.md. The weights are scaled by the window length so that their mean is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import PositionalEncoding, kl_rows


class AnomalyAttention(nn.Module):
    def __init__(self, width: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.head_width = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.sigma = nn.Linear(width, heads)
        self.out = nn.Linear(width, width)
        index = torch.arange(window, dtype=torch.float32)
        self.register_buffer("distance2", (index[:, None] - index[None, :]) ** 2)  # [L, L]

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B, L, D = x.shape
        H, E = self.heads, self.head_width
        qkv = self.qkv(x).reshape(B, L, 3, H, E).permute(2, 0, 3, 1, 4)  # [3, B, H, L, E]
        q, k, v = qkv[0], qkv[1], qkv[2]
        series = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(E), dim=-1)  # [B, H, L, L]
        sigma = torch.sigmoid(self.sigma(x) * 5.0) + 1e-5  # [B, L, H]
        sigma = torch.pow(3.0, sigma) - 1.0
        sigma = sigma.transpose(1, 2).unsqueeze(-1)  # [B, H, L, 1]
        d2 = self.distance2[:L, :L]
        prior = torch.exp(-d2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)  # [B, H, L, L]
        prior = prior / prior.sum(dim=-1, keepdim=True)
        out = (series @ v).transpose(1, 2).reshape(B, L, D)  # [B, L, D]
        return self.out(out), series, prior


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ff: int, window: int, dropout: float):
        super().__init__()
        self.attention = AnomalyAttention(width, heads, window)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, width))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        attended, series, prior = self.attention(x)
        x = self.norm1(x + attended)
        return self.norm2(x + self.ff(x)), series, prior


@dataclass(frozen=True)
class AnomalyTransformerParams(Hyper):
    width: int = 64
    heads: int = 4
    layers: int = 3
    ff: int = 128
    k: float = 3.0
    temperature: float = 50.0
    dropout: float = 0.0
    association_weighting: str = "paper"  # "paper": softmax(-disc * temperature); "mild": softmax(-disc / temperature)

    def check(self) -> None:
        require_heads_divide(self.width, self.heads)
        require(self.layers >= 1, "layers", "must be >= 1", self.layers)
        require(self.temperature > 0, "temperature", "must be > 0", self.temperature)
        require(self.association_weighting in ("paper", "mild"), "association_weighting", "must be paper or mild",
                self.association_weighting)


class AnomalyTransformer(Detector):
    name = "anomaly_transformer"
    Params = AnomalyTransformerParams
    presets = {"tiny": {"width": 16, "heads": 2, "layers": 1, "ff": 32}}

    def __init__(self, n_channels: int, window: int, hp: AnomalyTransformerParams = AnomalyTransformerParams()):
        super().__init__(n_channels, window, hp)
        width, heads, layers, ff, dropout = hp.width, hp.heads, hp.layers, hp.ff, hp.dropout
        k, temperature = hp.k, hp.temperature
        self.embed = nn.Linear(n_channels, width)
        self.position = PositionalEncoding(width, window)
        self.layers = nn.ModuleList([EncoderLayer(width, heads, ff, window, dropout) for _ in range(layers)])
        self.project = nn.Linear(width, n_channels)
        self.k = k
        self.sharpness = temperature if hp.association_weighting == "paper" else 1.0 / temperature

    def run(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        h = self.position(self.embed(x))  # [B, L, D]
        series: List[Tensor] = []
        priors: List[Tensor] = []
        for layer in self.layers:
            h, s, p = layer(h)
            series.append(s)
            priors.append(p)
        return self.project(h), series, priors  # [B, L, C], lists of [B, H, L, L]

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        x_hat, series, priors = self.run(x)
        rec = ((x_hat - x) ** 2).mean()
        series_term = torch.zeros((), device=x.device)
        prior_term = torch.zeros((), device=x.device)
        for s, p in zip(series, priors):
            series_term = series_term + (kl_rows(s, p.detach()) + kl_rows(p.detach(), s)).mean()
            prior_term = prior_term + (kl_rows(p, s.detach()) + kl_rows(s.detach(), p)).mean()
        n = float(len(series))
        # minimise: prior follows the series; maximise: series moves away from the prior
        return 2 * rec + self.k * (prior_term - series_term) / n

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.run(x)[0]

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x_hat, series, priors = self.run(x)
        err = (x_hat - x) ** 2  # [B, L, C]
        discrepancy = torch.zeros(x.shape[0], x.shape[1], device=x.device)
        for s, p in zip(series, priors):
            discrepancy = discrepancy + (kl_rows(s, p) + kl_rows(p, s)).mean(dim=1)  # [B, L]
        weight = torch.softmax(-discrepancy * self.sharpness, dim=-1) * x.shape[1]  # [B, L], mean 1
        contrib = err * weight.unsqueeze(-1)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
