"""USAD (Audibert et al., KDD 2020): one encoder, two decoders, trained adversarially in two phases.

AE1 = D1(E(x)) and AE2 = D2(E(x)) both learn to reconstruct x. Adversarially, AE1 learns to fool AE2 (make
AE2(AE1(x)) close to x) while AE2 learns to tell AE1's output from real data (make AE2(AE1(x)) far from x). The
weight of the adversarial terms grows with the epoch: 1/n for reconstruction, 1 - 1/n for the adversarial term.
Both phases are one loss here: parameter-frozen calls route each phase's adversarial gradient to its own decoder.
Score per step = alpha * |x - AE1(x)|^2 + beta * |x - AE2(AE1(x))|^2 (mean over channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor

from .base import Detector
from .hparams import Hyper, require
from .layers import frozen_call, mlp


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

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        B, L, C = x.shape
        flat = x.reshape(B, L * C)  # [B, L*C]
        n = float(epoch + 1)
        z = self.encoder(flat)
        ae1 = self.decoder1(z)
        ae2 = self.decoder2(z)
        # phase 1: AE1 reconstructs and fools a frozen D2
        fooled = frozen_call(self.decoder2, self.encoder(ae1))
        loss1 = ((flat - ae1) ** 2).mean() / n + (1 - 1 / n) * ((flat - fooled) ** 2).mean()
        # phase 2: AE2 reconstructs and pushes AE1's (detached) output away; only D2 learns from that term
        caught = self.decoder2(frozen_call(self.encoder, ae1.detach()))
        loss2 = ((flat - ae2) ** 2).mean() / n - (1 - 1 / n) * ((flat - caught) ** 2).mean()
        return loss1 + loss2

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        flat = x.reshape(B, L * C)  # [B, L*C]
        ae1 = self.decoder1(self.encoder(flat))
        ae2_of_ae1 = self.decoder2(self.encoder(ae1))
        err = self.alpha * (flat - ae1) ** 2 + self.beta * (flat - ae2_of_ae1) ** 2  # [B, L*C]
        contrib = err.reshape(B, L, C)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
