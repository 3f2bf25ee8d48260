"""DCdetector (Yang et al., KDD 2023): dual attention contrastive representation, no reconstruction.

Each channel is a univariate series (channel independence), seen two ways for every patch size p: patch-wise
(tokens are the L/p patches; attention relates patches) and in-patch (tokens are the p positions inside a patch,
embedded across patches; attention relates positions). Both attention maps are expanded to step x step (repeat
each patch / tile the in-patch map) and normalised per row. On normal data the two views agree; an anomaly disturbs
one view more than the other. Score = symmetric KL between the two views' per-step distributions, averaged over
heads and patch sizes; per channel, which gives the contributions directly.
Loss: the two views are pulled together on (normal) training data, with a small entropy penalty that keeps the
attention maps from collapsing to uniform (the trivial way to agree). The paper contrasts stop-gradient copies of
the views; its pull and push terms cancel in value, which leaves no training curve to early-stop on.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import require, require_heads_divide
from .layers import kl_rows, pad_to_multiple
from .registry import register


class ViewAttention(nn.Module):
    """Attention map [N, H, T, T] of tokens [N, T, F] (queries and keys only: the map is the representation)."""

    def __init__(self, features: int, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_width = width // heads
        self.embed = nn.Linear(features, width)
        self.qk = nn.Linear(width, 2 * width)

    def forward(self, tokens: Tensor) -> Tensor:
        N, T, _ = tokens.shape
        qk = self.qk(self.embed(tokens)).reshape(N, T, 2, self.heads, self.head_width).permute(2, 0, 3, 1, 4)
        return torch.softmax(qk[0] @ qk[1].transpose(-1, -2) / math.sqrt(self.head_width), dim=-1)  # [N,H,T,T]


class DualView(nn.Module):
    def __init__(self, window: int, patch: int, width: int, heads: int):
        super().__init__()
        self.patch = patch
        self.n_patches = -(-window // patch)
        self.patch_wise = ViewAttention(patch, width, heads)
        self.in_patch = ViewAttention(self.n_patches, width, heads)

    def forward(self, series: Tensor) -> Tuple[Tensor, Tensor]:
        """series [N, L] -> per-step row distributions of both views, each [N, H, L, L]."""
        L = series.shape[1]
        padded = pad_to_multiple(series, self.patch)  # [N, L']
        N = padded.shape[0]
        patches = padded.reshape(N, self.n_patches, self.patch)  # [N, P, p]
        a_patch = self.patch_wise(patches)  # [N, H, P, P]
        a_in = self.in_patch(patches.transpose(1, 2))  # [N, H, p, p]
        big_patch = a_patch.repeat_interleave(self.patch, dim=2).repeat_interleave(self.patch, dim=3) / self.patch
        big_in = a_in.repeat(1, 1, self.n_patches, self.n_patches) / self.n_patches
        return big_patch[:, :, :L, :L], big_in[:, :, :L, :L]


@register
class DCdetector(Detector):
    name = "dcdetector"
    presets = {
        "default": {"patch_sizes": [5, 10], "width": 64, "heads": 1, "entropy_weight": 0.05},
        "tiny": {"patch_sizes": [4, 8], "width": 16, "heads": 1, "entropy_weight": 0.05},
    }

    def __init__(self, n_channels: int, window: int, patch_sizes: Optional[List[int]] = None, width: int = 64,
                 heads: int = 1, entropy_weight: float = 0.05):
        super().__init__(n_channels, window)
        sizes = [min(p, window) for p in (patch_sizes or [5, 10])]
        require(all(p >= 1 for p in sizes), "patch_sizes", "must be positive integers", patch_sizes)
        require_heads_divide(width, heads)
        self.views = nn.ModuleList([DualView(window, p, width, heads) for p in sizes])
        self.entropy_weight = entropy_weight

    def views_of(self, x: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        B, L, C = x.shape
        series = x.permute(0, 2, 1).reshape(B * C, L)  # [B*C, L]
        patch_views: List[Tensor] = []
        in_views: List[Tensor] = []
        for view in self.views:
            p, q = view(series)
            patch_views.append(p)
            in_views.append(q)
        return patch_views, in_views

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        patch_views, in_views = self.views_of(x)
        total = torch.zeros((), device=x.device)
        for p, q in zip(patch_views, in_views):
            agreement = (kl_rows(p, q) + kl_rows(q, p)).mean()
            entropy = -(p * torch.log(p + 1e-6)).sum(-1).mean() - (q * torch.log(q + 1e-6)).sum(-1).mean()
            total = total + agreement + self.entropy_weight * entropy
        return total / len(patch_views)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        patch_views, in_views = self.views_of(x)
        total = torch.zeros(B * C, L, device=x.device)
        for p, q in zip(patch_views, in_views):
            total = total + (kl_rows(p, q) + kl_rows(q, p)).mean(dim=1)  # [B*C, L]
        contrib = (total / len(patch_views)).reshape(B, C, L).permute(0, 2, 1).clamp(min=0.0)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
