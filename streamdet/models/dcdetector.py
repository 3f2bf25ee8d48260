"""DCdetector (Yang et al., KDD 2023): dual attention contrastive representation, no reconstruction.

Each channel is a univariate series (channel independence), instance-normalised over its window as in the paper,
seen two ways for every patch size p: patch-wise (tokens are the L/p patches; attention relates patches) and
in-patch (tokens are the p positions inside a patch, embedded across patches; attention relates positions). As in the paper, both maps are read as step x step
distributions (each patch repeated / the in-patch map tiled, normalised per row). On normal data the two views
agree; an anomaly disturbs one view more than the other. Score = symmetric KL between the two views' per-step
distributions, averaged over heads and patch sizes; per channel, which gives the contributions directly. That KL
factorises (see DualView), so the step x step maps are never built.
Loss: the two views are pulled together on (normal) training data, with a small entropy penalty that keeps the
attention maps from collapsing to uniform (the trivial way to agree). The paper contrasts stop-gradient copies of
the views; its pull and push terms cancel in value, which leaves no training curve to early-stop on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import pad_to_multiple


def instance_normalise(series: Tensor, eps: float = 1e-5) -> Tensor:
    """Each series [N, L] to zero mean and unit variance over its own window (the paper's instance normalisation,
    RevIN without the affine part): the views compare shapes, not levels."""
    mean = series.mean(dim=-1, keepdim=True)
    std = torch.sqrt(series.var(dim=-1, unbiased=False, keepdim=True) + eps)
    return (series - mean) / std


class ViewAttention(nn.Module):
    """Attention map [N, H, T, T] of tokens [N, T, F] (queries and keys only: the map is the representation).

    N = B*C univariate series; T tokens (P patches or p in-patch positions); F features per token.
    """

    def __init__(self, features: int, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_width = width // heads
        self.embed = nn.Linear(features, width)
        self.qk = nn.Linear(width, 2 * width)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.training:
            return self.projected(tokens)
        return self.folded(tokens)

    def projected(self, tokens: Tensor) -> Tensor:
        """The map as the layers define it: embed, project to queries and keys, softmax of their products."""
        N, T, _ = tokens.shape
        qk = self.qk(self.embed(tokens)).reshape(N, T, 2, self.heads, self.head_width)  # [N, T, 2, H, D/H]
        qk = qk.permute(2, 0, 3, 1, 4)  # [2, N, H, T, D/H]
        return torch.softmax(qk[0] @ qk[1].transpose(-1, -2) / math.sqrt(self.head_width), dim=-1)  # [N,H,T,T]

    def folded(self, tokens: Tensor) -> Tensor:
        """The same map in the tokens' own F dimensions (scoring): with q_i = A_q t_i + c_q and k_j = A_k t_j + c_k
        (embed and projection are both affine), q_i . k_j = (t_i M + w) . t_j + terms without j, M = A_q' A_k,
        w = c_q A_k; the softmax over j drops the terms without j. F is a patch size or a patch count (5-20)
        where D is 64: the width-D products dominated the model's scoring cost (measured, docs/models.md)."""
        weight = self.qk.weight.reshape(2, self.heads, self.head_width, -1)  # [2, H, d, D]
        bias = self.qk.bias.reshape(2, self.heads, self.head_width)  # [2, H, d]
        a = weight @ self.embed.weight  # [2, H, d, F]: A_q, A_k per head
        c_q = (weight[0] @ self.embed.bias) + bias[0]  # [H, d]
        scale = 1.0 / math.sqrt(self.head_width)
        m = (a[0].transpose(-1, -2) @ a[1]) * scale  # [H, F, F]
        w = (c_q.unsqueeze(1) @ a[1]) * scale  # [H, 1, F]
        t = tokens.unsqueeze(1)  # [N, 1, T, F]
        queries = t @ m + w  # [N, H, T, F]
        return torch.softmax(queries @ t.transpose(-1, -2), dim=-1)  # [N, H, T, T]


class DualView(nn.Module):
    """Both views of one patch size, compared without building the step x step maps.

    Step i = I p + r (patch I, position r) has the patch-wise row aP[I, u] / p and the in-patch row aI[r, v] / P
    over steps j = u p + v. Their symmetric KL factorises: sum_u (aP[I,u] - 1/P) log aP[I,u] + the same for aI[r]
    over v. So each view contributes its own divergence from uniform attention, and the cost is O(P^2 + p^2) per
    series instead of O(L^2): building the expanded maps made training on SMD about 20x slower.
    """

    def __init__(self, window: int, patch: int, width: int, heads: int):
        super().__init__()
        self.patch = patch
        self.n_patches = -(-window // patch)
        self.patch_wise = ViewAttention(patch, width, heads)
        self.in_patch = ViewAttention(self.n_patches, width, heads)

    def forward(self, series: Tensor) -> Tuple[Tensor, Tensor]:
        """series [N, L] -> (symmetric KL between the views, entropy of both views), each per step [N, H, L]."""
        L = series.shape[1]
        padded = pad_to_multiple(series, self.patch)  # [N, L']
        patches = padded.reshape(padded.shape[0], self.n_patches, self.patch)  # [N, P, p]
        a_patch = self.patch_wise(patches)  # [N, H, P, P]
        a_in = self.in_patch(patches.transpose(1, 2))  # [N, H, p, p]
        log_patch, log_in = torch.log(a_patch + 1e-6), torch.log(a_in + 1e-6)
        neg_entropy_patch = (a_patch * log_patch).sum(-1)  # [N, H, P]
        neg_entropy_in = (a_in * log_in).sum(-1)  # [N, H, p]
        gap_patch = (neg_entropy_patch - log_patch.mean(-1)).repeat_interleave(self.patch, dim=-1)  # [N, H, L']
        gap_in = (neg_entropy_in - log_in.mean(-1)).repeat(1, 1, self.n_patches)  # [N, H, L']
        entropy = -(neg_entropy_patch.repeat_interleave(self.patch, dim=-1)
                    + neg_entropy_in.repeat(1, 1, self.n_patches))  # [N, H, L']
        return (gap_patch + gap_in)[..., :L], entropy[..., :L]


@dataclass(frozen=True)
class DCdetectorParams(Hyper):
    patch_sizes: Tuple[int, ...] = (5, 10)
    width: int = 64
    heads: int = 1
    entropy_weight: float = 0.05
    instance_norm: bool = True  # the paper's per-window normalisation; false compares levels too (measured)

    def check(self) -> None:
        require(len(self.patch_sizes) >= 1 and all(p >= 1 for p in self.patch_sizes), "patch_sizes",
                "must be a non-empty list of positive integers", list(self.patch_sizes))
        require_heads_divide(self.width, self.heads)


class DCdetector(Detector):
    name = "dcdetector"
    Params = DCdetectorParams
    presets = {"tiny": {"patch_sizes": [4, 8], "width": 16}}

    def __init__(self, n_channels: int, window: int, hp: DCdetectorParams = DCdetectorParams()):
        super().__init__(n_channels, window, hp)
        sizes = [min(p, window) for p in hp.patch_sizes]
        width, heads, entropy_weight = hp.width, hp.heads, hp.entropy_weight
        self.views = nn.ModuleList([DualView(window, p, width, heads) for p in sizes])
        self.entropy_weight = entropy_weight
        self.instance_norm = hp.instance_norm

    def discrepancy(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x [B, L, C] -> per series (B*C rows) and step: view discrepancy and view entropy, each [B*C, L]."""
        B, L, C = x.shape
        series = x.permute(0, 2, 1).reshape(B * C, L)  # [B*C, L]
        if self.instance_norm:
            series = instance_normalise(series)
        gap = torch.zeros(B * C, L, device=x.device)
        entropy = torch.zeros(B * C, L, device=x.device)
        for view in self.views:
            g, e = view(series)  # [B*C, H, L]
            gap = gap + g.mean(dim=1)
            entropy = entropy + e.mean(dim=1)
        return gap / len(self.views), entropy / len(self.views)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        gap, entropy = self.discrepancy(x)
        return gap.mean() + self.entropy_weight * entropy.mean()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        gap, _ = self.discrepancy(x)  # [B*C, L]
        contrib = gap.reshape(B, C, L).permute(0, 2, 1).clamp(min=0.0)  # [B, L, C]
        return contrib.mean(dim=-1), contrib
