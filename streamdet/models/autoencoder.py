"""Dense autoencoder: flatten the window, squeeze it through a bottleneck, expand it back.

The simplest reconstruction model: no notion of time order beyond the flattened layout, which makes it a strong,
fast baseline on short windows. Score = per-step squared reconstruction error; contributions per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor, nn

from .base import Detector, squared_error_scores
from .hparams import Hyper, require
from .layers import mlp


@dataclass(frozen=True)
class AutoencoderParams(Hyper):
    hidden: int = 256
    latent: int = 32
    dropout: float = 0.1

    def check(self) -> None:
        require(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        require(self.latent >= 1, "latent", "must be >= 1", self.latent)
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)


class DenseAutoencoder(Detector):
    name = "autoencoder"
    Params = AutoencoderParams
    presets = {"tiny": {"hidden": 32, "latent": 8, "dropout": 0.0}}

    def __init__(self, n_channels: int, window: int, hp: AutoencoderParams = AutoencoderParams()):
        super().__init__(n_channels, window, hp)
        flat = n_channels * window
        self.encoder = mlp([flat, hp.hidden, hp.latent])
        self.decoder = mlp([hp.latent, hp.hidden, flat])
        self.input_dropout = nn.Dropout(hp.dropout)  # denoising: keeps the bottleneck from copying noise

    def reconstruct(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        flat = x.reshape(B, L * C)  # [B, L*C]
        return self.decoder(self.encoder(self.input_dropout(flat))).reshape(B, L, C)  # [B, L, C]

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.reconstruct(x)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        return ((self.reconstruct(x) - x) ** 2).mean()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return squared_error_scores(x, self.reconstruct(x))

