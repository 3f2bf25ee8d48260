"""TranAD (Tuli et al., VLDB 2022): a transformer encoder-decoder with focus-score self-conditioning.

Phase 1 reconstructs the window with a zero focus score. Phase 2 re-encodes the window together with the squared
error of phase 1 (the focus score), which directs attention to the hard-to-reconstruct steps. Training is
adversarial with epoch-dependent weights (1/n, 1 - 1/n): decoder 1 learns to make phase 2 reconstruct well, decoder 2
learns to amplify phase-1 errors. One loss here, with parameter-frozen calls routing each adversarial term.
Each decoder is a transformer decoder layer: one learned query per step (initialised to position codes) attends to
itself and to the encoding, so input values reach the output only through the encoder. The paper decodes the last
step from the window itself as target; decoding every step from queries fits the per-step contract. Score = 0.5 *
phase-1 error + 0.5 * phase-2 error per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require, require_heads_divide
from .layers import PositionalEncoding, TransformerStack, attend, frozen_call, sinusoidal_positions


class WindowDecoder(nn.Module):
    """Transformer decoder: one query per step (position codes) self-attends and cross-attends to the encoding.

    Queries carry no input values, so the window can reach the output only through the encoder's memory.
    """

    def __init__(self, width: int, heads: int, ff: int, n_channels: int, window: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(sinusoidal_positions(max(window, 1), width))  # [L, D]
        self.block = nn.TransformerDecoderLayer(width, heads, ff, dropout, batch_first=True, norm_first=True)
        self.head = nn.Linear(width, n_channels)

    def forward(self, memory: Tensor) -> Tensor:
        B, L, D = memory.shape
        if self.training:  # dropout draws per window: the layer as written
            return self.head(self.block(self.queries[:L].unsqueeze(0).expand(B, L, D), memory))  # [B, L, C]
        return self.head(self.scored(memory))

    def scored(self, memory: Tensor) -> Tensor:
        """The decoder layer in eval (norm first, no dropout), with what does not depend on the window computed once
        for the batch: the queries' self-attention and their cross-attention query projection."""
        block = self.block
        queries = self.queries[: memory.shape[1]].unsqueeze(0)  # [1, L, D]
        h = block.norm1(queries)
        own, cross = block.self_attn, block.multihead_attn
        x = queries + attend(h, h, own.num_heads, own.in_proj_weight, own.in_proj_bias, own.out_proj.weight,
                             own.out_proj.bias)  # [1, L, D]: the same for every window
        x = x + attend(block.norm2(x), memory, cross.num_heads, cross.in_proj_weight, cross.in_proj_bias,
                       cross.out_proj.weight, cross.out_proj.bias)  # [B, L, D]
        return x + block.linear2(F.relu(block.linear1(block.norm3(x))))  # nn.TransformerDecoderLayer's default relu


@dataclass(frozen=True)
class TranADParams(Hyper):
    width: int = 64
    heads: int = 4
    layers: int = 2
    ff: int = 128
    dropout: float = 0.1

    def check(self) -> None:
        require_heads_divide(self.width, self.heads)
        require(self.layers >= 1, "layers", "must be >= 1", self.layers)
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)


class TranAD(Detector):
    name = "tranad"
    Params = TranADParams
    presets = {"tiny": {"width": 16, "heads": 2, "layers": 1, "ff": 32, "dropout": 0.0}}

    def __init__(self, n_channels: int, window: int, hp: TranADParams = TranADParams()):
        super().__init__(n_channels, window, hp)
        width, heads, layers, ff, dropout = hp.width, hp.heads, hp.layers, hp.ff, hp.dropout
        self.embed = nn.Linear(2 * n_channels, width)  # the window and its focus score, side by side
        self.position = PositionalEncoding(width, max(window, 1))
        self.encoder = TransformerStack(width, heads, ff, layers, dropout)
        self.decoder1 = WindowDecoder(width, heads, ff, n_channels, window, dropout)
        self.decoder2 = WindowDecoder(width, heads, ff, n_channels, window, dropout)

    def encode(self, x: Tensor, focus: Tensor) -> Tensor:
        return self.encoder(self.position(self.embed(torch.cat([x, focus], dim=-1))))  # [B, L, D]

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        n = float(epoch + 1)
        h1 = self.encode(x, torch.zeros_like(x))
        o1 = self.decoder1(h1)
        o2 = self.decoder2(h1)
        focus = (o1 - x) ** 2
        # decoder 1 (and the encoder) want phase 2 to reconstruct well through a frozen decoder 2
        phase2 = frozen_call(self.decoder2, self.encode(x, focus))
        loss1 = ((o1 - x) ** 2).mean() / n + (1 - 1 / n) * ((phase2 - x) ** 2).mean()
        # decoder 2 wants phase 2 to expose phase-1 errors (maximise), from a detached encoding
        exposed = self.decoder2(self.encode(x, focus.detach()).detach())
        loss2 = ((o2 - x) ** 2).mean() / n - (1 - 1 / n) * ((exposed - x) ** 2).mean()
        return loss1 + loss2

    def expected(self, x: Tensor) -> Optional[Tensor]:
        focus = (self.decoder1(self.encode(x, torch.zeros_like(x))) - x) ** 2
        return self.decoder2(self.encode(x, focus))  # the phase-2 reconstruction

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        o1 = self.decoder1(self.encode(x, torch.zeros_like(x)))
        focus = (o1 - x) ** 2
        o2 = self.decoder2(self.encode(x, focus))
        contrib = 0.5 * focus + 0.5 * (o2 - x) ** 2  # [B, L, C]
        return contrib.mean(dim=-1), contrib
