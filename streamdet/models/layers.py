"""Blocks shared by the detectors. Shapes: B batch, L window, C channels, D width, P patches, H heads.

Everything reachable from a model's forward is TorchScript-scriptable (typed, no Python-only constructs).
"""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def sinusoidal_positions(length: int, width: int) -> Tensor:
    """[length, width] fixed sine/cosine position codes (Vaswani et al., 2017)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # [L, 1]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    codes = torch.zeros(length, width)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: width // 2])
    return codes


class PositionalEncoding(nn.Module):
    """Adds fixed position codes to [N, L, D] (L up to max_len)."""

    def __init__(self, width: int, max_len: int):
        super().__init__()
        self.register_buffer("codes", sinusoidal_positions(max_len, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.codes[: x.shape[1]].unsqueeze(0)  # [N, L, D] + [1, L, D]


def attend(queries: Tensor, memory: Tensor, heads: int, in_weight: Tensor, in_bias: Tensor, out_weight: Tensor,
           out_bias: Tensor) -> Tensor:
    """What nn.MultiheadAttention with these parameters returns in eval (no mask, no dropout), batch-first
    throughout: [Nq, T, D] queries (Nq = N, or 1 for queries shared by the whole batch) over [N, S, D] memory ->
    [N, T, D]. Its exported (traced) form runs sequence-first and transposes in and out, which left the compiled
    models' residual adds reading strided memory; the same SDPA call without that costs less. (Tensors, not the
    module, as arguments: TorchScript types a module argument by its instance.)"""
    N, S, D = memory.shape
    width = D // heads
    q = F.linear(queries, in_weight[:D], in_bias[:D])  # [Nq, T, D]
    q = q.reshape(q.shape[0], q.shape[1], heads, width).transpose(1, 2).expand(N, heads, q.shape[1], width)
    kv = F.linear(memory, in_weight[D:], in_bias[D:]).reshape(N, S, 2, heads, width).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # [N, H, T, D/H]
    return F.linear(out.transpose(1, 2).reshape(N, -1, D), out_weight, out_bias)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + feed-forward on [N, T, D]; no batch statistics (row independent)."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, width))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        if self.training:
            attended, _ = self.attn(h, h, h, need_weights=False)
        else:
            attn = self.attn
            attended = attend(h, h, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
                              attn.out_proj.weight, attn.out_proj.bias)
        x = x + attended
        return x + self.ff(self.norm2(x))


class TransformerStack(nn.Module):
    """`layers` TransformerBlocks and a final LayerNorm on [N, T, D] (the encoder of TranAD and the patch AE)."""

    def __init__(self, width: int, heads: int, ff: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, ff, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """[N, L, ...] -> [N, L', ...] with L' the next multiple of `multiple`, repeating the last step (edge padding)."""
    length = x.shape[1]
    extra = (multiple - length % multiple) % multiple
    if extra == 0:
        return x
    index = torch.arange(length + extra, device=x.device).clamp(max=length - 1)
    return x.index_select(1, index)


def patch_starts(length: int, patch: int, stride: int) -> Tensor:
    """Start index of every patch so that the patches cover [0, length); the last one is aligned to the end."""
    if patch >= length:
        return torch.zeros(1, dtype=torch.long)
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return torch.tensor(starts, dtype=torch.long)


def kl_rows(p: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """KL(p || q) over the last dimension of row distributions."""
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=-1)


def frozen_call(module: nn.Module, *inputs: Tensor) -> Tensor:
    """Call `module` with its parameters detached: gradients reach the inputs, not the module.

    Used by adversarial objectives (USAD, TranAD) to route one phase's gradient to one decoder only.
    Training only (never scripted).
    """
    params: Dict[str, Tensor] = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, inputs)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where mask is 1 (same shape or broadcastable); 0 when nothing is selected."""
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def mlp(sizes: list, activation: str = "gelu", last_activation: bool = False) -> nn.Sequential:
    """Linear layers through `sizes` with GELU/ReLU between them; the output stays linear unless `last_activation`."""
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.GELU() if activation == "gelu" else nn.ReLU())
    return nn.Sequential(*layers)
