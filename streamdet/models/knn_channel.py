"""Channel-wise nearest neighbour (`knn_channel`): each channel's recent shape against that channel's own past.

knn (baselines.py) looks for the nearest training sub-window over all channels at once, so one channel that moves
a lot in normal operation decides the distance and a quiet channel's anomaly is lost in it. Here every channel has
its own references and its own nearest neighbour: the distance of the `span` values ending at a step to the
closest `span`-value stretch of the same channel in training. Each channel's distance is divided by its mean
distance on validation windows (`fit_validation`, data the references never saw; floored at 5 % of the median
channel's, so a channel that never moved on validation cannot make every later twitch an alarm), and the score is
the mean over channels. The per-channel distances are the alert's contributions: the channel that left its own
habits is the one named.

What it cannot see: a combination of channel values that never occurred together while each channel stays in its
own normal repertoire (knn and pca see that). auto ranks it against them on validation data
(docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor

from .baselines import FittedDetector, ReferenceParams, _sample, _train_subwindows, subwindows

SCALE_FLOOR = 0.05  # of the median channel's validation distance
VALIDATION_QUERIES = 2000  # sub-windows per channel that fit the scale
REFERENCE_CHUNK = 256  # references per matrix product (see _distances)


@dataclass(frozen=True)
class ChannelKNNParams(ReferenceParams):
    references: int = 2000  # per channel


class ChannelNearestNeighbour(FittedDetector):
    name = "knn_channel"
    Params = ChannelKNNParams
    presets = {"tiny": {"span": 4, "references": 128}}

    def __init__(self, n_channels: int, window: int, hp: ChannelKNNParams = ChannelKNNParams()):
        super().__init__(n_channels, window, hp)
        self.span, self.seed = min(hp.span, window), hp.seed
        self.chunk = REFERENCE_CHUNK
        self.register_buffer("reference", torch.zeros(n_channels, hp.references, self.span))  # [C, R, span]
        self.register_buffer("scale", torch.ones(n_channels))

    def prepare(self, train: Tensor) -> None:
        R, C = self.reference.shape[1], self.n_channels
        flat = _sample(_train_subwindows(train, self.span, R, self.seed), R, self.seed + 1)  # [R, span*C]
        self.reference.copy_(flat.reshape(R, self.span, C).permute(2, 0, 1))  # [R, span, C] -> [C, R, span]

    def fit_validation(self, val: Tensor) -> None:
        """Each channel's mean nearest-neighbour distance over the last steps of the validation windows."""
        N, L, _ = val.shape
        if N == 0:
            return
        steps = max(1, min(L - self.span + 1, math.ceil(VALIDATION_QUERIES / N)))
        with torch.no_grad():
            tail = val[:, L - (steps + self.span - 1):]  # just enough rows for `steps` full sub-windows
            distances = self._distances(tail)[:, -steps:]  # [N, steps, C]
        mean = distances.reshape(-1, self.n_channels).mean(dim=0)  # [C]
        self.scale.copy_(mean.clamp(min=max(SCALE_FLOOR * float(mean.median()), 1e-6)))

    def _distances(self, x: Tensor) -> Tensor:
        """x [B, L, C] -> each step's per-channel distance to that channel's nearest reference [B, L, C].

        |q - r|^2 = |q|^2 + |r|^2 - 2 q.r, one matrix product per channel and block of REFERENCE_CHUNK references, a
        running minimum over the blocks (a [B*L, R] product per channel at once runs 2-3x slower out of cache; blocks
        of references, not of steps, keep the loop independent of the batch for exported bundles); both sides centred on
        the channel's reference mean first, so the subtraction does not lose small distances to large norms."""
        B, L, C = x.shape
        R = self.reference.shape[1]
        centre = self.reference.mean(dim=(1, 2))[:, None, None]  # [C, 1, 1]
        refs = self.reference - centre  # [C, R, span]
        ref_norms = (refs ** 2).sum(dim=-1)  # [C, R]
        q = subwindows(x, self.span).reshape(B * L, self.span, C).permute(2, 0, 1) - centre  # [C, B*L, span]
        rows: List[Tensor] = []  # out of place: grouped scoring runs this under vmap
        for c in range(C):
            nearest = torch.full_like(q[c, :, 0], float("inf"))  # [B*L]
            for start in range(0, R, self.chunk):
                block = torch.addmm(ref_norms[c, start:start + self.chunk][None], q[c],
                                    refs[c, start:start + self.chunk].t(), alpha=-2.0)  # [B*L, chunk]
                nearest = torch.minimum(nearest, block.min(dim=1).values)
            rows.append(nearest)
        squared = torch.stack(rows) + (q ** 2).sum(dim=-1)  # [C, B*L]
        return squared.clamp(min=0.0).sqrt().t().reshape(B, L, C)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        d = self._distances(x) / self.scale  # [B, L, C]
        return d.mean(dim=-1), d
