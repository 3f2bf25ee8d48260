"""Self-distilled masked autoencoder: a deep teacher and a shallow student disagree on what they never learned.

After Ristea et al., "Self-Distilled Masked Auto-Encoders are Efficient Video Anomaly Detectors", CVPR 2024.

A transformer encoder sees the window with a share of its steps masked (`mask_ratio`, replaced by a learned mask
token). A deep teacher decoder (`teacher_layers` transformer layers, 4 by default) reconstructs the masked steps; a
one-layer transformer student decoder learns to reproduce the teacher (self-distillation, teacher detached), as in the
self-distilled masked autoencoder design this follows. On normal patterns the student imitates the teacher well; on unseen
(anomalous) patterns their outputs part. Score = teacher-student discrepancy on masked steps, plus (weight
`recon_weight`) the teacher's error on them: a hidden step cannot make the two decoders disagree about a value
neither saw, so a lone spike shows only through the teacher failing to predict it from its context.
Scoring is deterministic and row independent: a fixed set of interleaved masks covers every step, and each step's
score averages the masks that hid it (K fixed masks).
Semi-supervised: when the training split carries labelled anomalies, their steps are left out of the
reconstruction and distillation losses and a margin loss pushes their discrepancy above `margin`, ramped in over
`warmup_epochs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import PositionalEncoding, TransformerStack, masked_mean


def interleaved_masks(window: int, ratio: float) -> Tensor:
    """[K, L] 0/1 masks: mask k hides steps t with (t + k) mod K < round(ratio K); every step is hidden by some."""
    k = 5
    hidden = max(1, min(k - 1, round(ratio * k)))
    t = torch.arange(window)
    return torch.stack([((t + i) % k < hidden).float() for i in range(k)])


@dataclass(frozen=True)
class SDMAEParams(Hyper):
    width: int = 64
    heads: int = 4
    encoder_layers: int = 2
    teacher_layers: int = 4  # the deep teacher decoder; the student decoder is one transformer layer
    ff: int = 128
    mask_ratio: float = 0.6
    margin: float = 1.0
    warmup_epochs: int = 3
    recon_weight: float = 1.0

    def check(self) -> None:
        require(self.teacher_layers >= 2, "teacher_layers", "must be >= 2 (deeper than the one-layer student)",
                self.teacher_layers)
        require(0.0 < self.mask_ratio < 1.0, "mask_ratio", "must lie strictly between 0 and 1", self.mask_ratio)
        require_heads_divide(self.width, self.heads)


class SelfDistilledMAE(Detector):
    name = "sd_mae"
    Params = SDMAEParams
    presets = {"tiny": {"width": 16, "heads": 2, "encoder_layers": 1, "teacher_layers": 2, "ff": 32, "warmup_epochs": 1}}

    def __init__(self, n_channels: int, window: int, hp: SDMAEParams = SDMAEParams()):
        super().__init__(n_channels, window, hp)
        width, heads, encoder_layers, teacher_layers, ff = hp.width, hp.heads, hp.encoder_layers, hp.teacher_layers, hp.ff
        mask_ratio, margin, warmup_epochs, recon_weight = hp.mask_ratio, hp.margin, hp.warmup_epochs, hp.recon_weight
        self.embed = nn.Linear(n_channels, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.position = PositionalEncoding(width, window)
        self.encoder = TransformerStack(width, heads, ff, encoder_layers)
        self.teacher = nn.Sequential(TransformerStack(width, heads, ff, teacher_layers), nn.Linear(width, n_channels))
        self.student = nn.Sequential(TransformerStack(width, heads, ff, 1), nn.Linear(width, n_channels))
        self.register_buffer("masks", interleaved_masks(window, mask_ratio))  # [K, L]
        self.mask_ratio = mask_ratio
        self.margin = margin
        self.warmup_epochs = warmup_epochs
        self.recon_weight = recon_weight

    def decode(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """x [N, L, C], mask [N, L] (1 = hidden) -> teacher and student outputs [N, L, C]."""
        h = self.embed(x)
        m = mask.unsqueeze(-1)  # [N, L, 1]
        h = h * (1 - m) + self.mask_token * m
        z = self.encoder(self.position(h))  # [N, L, D]
        return self.teacher(z), self.student(z)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        B, L, C = x.shape
        mask = (torch.rand(B, L, device=x.device) < self.mask_ratio).float()  # [B, L]
        teacher, student = self.decode(x, mask)
        normal = torch.ones_like(mask) if labels is None else 1.0 - labels.float()
        on_normal = (mask * normal).unsqueeze(-1)  # [B, L, 1]
        reconstruction = masked_mean((teacher - x) ** 2, on_normal)
        distillation = masked_mean((student - teacher.detach()) ** 2, on_normal)
        total = reconstruction + distillation
        if labels is not None and bool(labels.sum() > 0):
            ramp = min(1.0, float(epoch + 1) / max(1, self.warmup_epochs))
            discrepancy = ((student - teacher) ** 2).mean(dim=-1)  # [B, L]
            anomalous = mask * labels.float()
            total = total + ramp * masked_mean(F.relu(self.margin - discrepancy), anomalous)
        return total

    def expected(self, x: Tensor) -> Optional[Tensor]:
        """The teacher's value of each step, averaged over the inference masks that hide it."""
        K, B, L = self.masks.shape[0], x.shape[0], x.shape[1]
        masks = self.masks[:, :L].repeat(B, 1)  # [B*K, L]
        teacher, _ = self.decode(x.repeat_interleave(K, dim=0), masks)
        hidden = masks.unsqueeze(-1)
        summed = (teacher * hidden).reshape(B, K, L, -1).sum(dim=1)
        return summed / hidden.reshape(B, K, L, 1).sum(dim=1).clamp(min=1.0)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        K = self.masks.shape[0]
        masks = self.masks[:, :L].repeat(B, 1)  # [B*K, L]
        repeated = x.repeat_interleave(K, dim=0)  # [B*K, L, C]
        teacher, student = self.decode(repeated, masks)  # each [B*K, L, C]
        per_mask = (teacher - student) ** 2 + self.recon_weight * (teacher - repeated) ** 2  # [B*K, L, C]
        gap = (per_mask * masks.unsqueeze(-1)).reshape(B, K, L, C).sum(dim=1)  # [B, L, C]: summed where hidden
        hidden = masks.reshape(B, K, L).sum(dim=1).clamp(min=1.0).unsqueeze(-1)  # [B, L, 1]
        contrib = gap / hidden  # [B, L, C]
        return contrib.mean(dim=-1), contrib
