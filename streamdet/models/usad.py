"""USAD (Audibert et al., KDD 2020): one encoder, two decoders, trained adversarially in two phases.

AE1 = D1(E(x)) and AE2 = D2(E(x)) both learn to reconstruct x. Adversarially, AE1 learns to fool AE2 (make
AE2(AE1(x)) close to x) while AE2 learns to tell AE1's output from real data (make AE2(AE1(x)) far from x). The
weight of the adversarial terms grows with the epoch: 1/n for reconstruction, 1 - 1/n for the adversarial term.
As in the original, the two phases are two optimisers stepped one after the other on every batch (`phases = 2`):
phase 1 trains the encoder and D1 on L1, phase 2 the encoder and D2 on L2, so the shared encoder learns in both
phases. In one summed loss the encoder's two adversarial gradients would cancel exactly; separate steps keep both.
Score per step = alpha * |x - AE1(x)|^2 + beta * |x - AE2(AE1(x))|^2 (mean over channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require
from .layers import mlp


@dataclass(frozen=True)
class USADParams(Hyper):
    hidden: int = 256
    latent: int = 40
    alpha: float = 0.5
    beta: float = 0.5

    def check(self) -> None:
        require(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        require(self.latent >= 1, "latent", "must be >= 1", self.latent)
        require(self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta > 0, "alpha",
                "alpha and beta must be >= 0, not both 0", (self.alpha, self.beta))


class USAD(Detector):
    name = "usad"
    Params = USADParams
    presets = {"tiny": {"hidden": 32, "latent": 8}}

    def __init__(self, n_channels: int, window: int, hp: USADParams = USADParams()):
        super().__init__(n_channels, window, hp)
        hidden, latent, alpha, beta = hp.hidden, hp.latent, hp.alpha, hp.beta
        flat = n_channels * window
        self.encoder = mlp([flat, hidden, latent], activation="relu")
        self.decoder1 = mlp([latent, hidden, flat], activation="relu")
        self.decoder2 = mlp([latent, hidden, flat], activation="relu")
        self.alpha = alpha
        self.beta = beta

    phases = 2

    def phase_parameters(self, phase: int) -> List[nn.Parameter]:
        decoder = self.decoder1 if phase == 0 else self.decoder2
        return list(self.encoder.parameters()) + list(decoder.parameters())

    def phase_loss(self, x: Tensor, epoch: int, phase: int, labels: Optional[Tensor] = None) -> Tensor:
        """Phase 0 (L1): AE1 reconstructs and fools D2. Phase 1 (L2): AE2 reconstructs and exposes AE1's output."""
        B, L, C = x.shape
        flat = x.reshape(B, L * C)  # [B, L*C]
        n = float(epoch + 1)
        z = self.encoder(flat)
        ae1 = self.decoder1(z)
        game = ((flat - self.decoder2(self.encoder(ae1))) ** 2).mean()  # |x - AE2(AE1(x))|^2
        if phase == 0:
            return ((flat - ae1) ** 2).mean() / n + (1 - 1 / n) * game
        return ((flat - self.decoder2(z)) ** 2).mean() / n - (1 - 1 / n) * game

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        """Both phases' objectives (the validation loss; the adversarial terms cancel in value)."""
        return self.phase_loss(x, epoch, 0) + self.phase_loss(x, epoch, 1)

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.decoder1(self.encoder(x.reshape(x.shape[0], -1))).reshape(x.shape)  # AE1(x)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        flat = x.reshape(B, L * C)  # [B, L*C]
        ae1 = self.decoder1(self.encoder(flat))
        ae2_of_ae1 = self.decoder2(self.encoder(ae1))
        err = self.alpha * (flat - ae1) ** 2 + self.beta * (flat - ae2_of_ae1) ** 2  # [B, L*C]
        contrib = err.reshape(B, L, C)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
