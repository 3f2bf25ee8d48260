"""Half-Space Trees (Tan, Ting & Liu, IJCAI 2011) in batch form, behind the Detector contract like baselines.py.

River's HST learns masses online from a sliding reference window in Python; here the random tree structure is drawn
once and the node masses are counted from the training rows in prepare(), so scoring is fixed tensor gathers
(scriptable) and identical for every entity. A row descends each tree until a node holds under `size_limit` of the
reference mass; its density there is mass x 2^depth / N. Score = mean over trees of -log2(density): river sums masses
linearly, where one tree landing in a dense region masks the others; the log (a geometric mean) keeps the evidence of
every tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from .baselines import FittedDetector, training_rows
from .hparams import Hyper, require

_EPS = 1e-6


@dataclass(frozen=True)
class HSTParams(Hyper):
    trees: int = 25
    height: int = 10
    size_limit: float = 0.01
    seed: int = 0

    def check(self) -> None:
        require(self.trees >= 1, "trees", "must be >= 1", self.trees)
        require(1 <= self.height <= 20, "height", "must be in [1, 20]", self.height)


class HalfSpaceTrees(FittedDetector):
    name = "hst"
    Params = HSTParams
    presets = {"tiny": {"trees": 10, "height": 8}}

    def __init__(self, n_channels: int, window: int, hp: HSTParams = HSTParams()):
        super().__init__(n_channels, window, hp)
        self.height, self.size_limit, self.seed = hp.height, hp.size_limit, hp.seed
        inner, nodes = 2 ** hp.height - 1, 2 ** (hp.height + 1) - 1
        self.register_buffer("split_dim", torch.zeros(hp.trees, inner, dtype=torch.long))
        self.register_buffer("split_value", torch.zeros(hp.trees, inner))
        self.register_buffer("mass", torch.zeros(hp.trees, nodes))
        self.register_buffer("n_reference", torch.ones(()))

    def _grow(self, low: Tensor, high: Tensor, g: torch.Generator) -> None:
        """Random half-space splits: each node halves its region on a random channel (heap order)."""
        T, inner = self.split_dim.shape
        lo = low.expand(T, -1).clone()  # [T, C]: region of the current node, per tree
        hi = high.expand(T, -1).clone()
        regions = [(lo, hi)]
        for node in range(inner):
            lo, hi = regions[node]
            dim = torch.randint(0, self.n_channels, (T,), generator=g)  # [T]
            mid = (lo.gather(1, dim[:, None]) + hi.gather(1, dim[:, None])).squeeze(1) / 2  # [T]
            self.split_dim[:, node], self.split_value[:, node] = dim, mid
            left_hi, right_lo = hi.clone(), lo.clone()
            left_hi.scatter_(1, dim[:, None], mid[:, None])
            right_lo.scatter_(1, dim[:, None], mid[:, None])
            regions += [(lo, left_hi), (right_lo, hi)]

    def prepare(self, train: Tensor) -> None:
        rows = training_rows(train)
        g = torch.Generator().manual_seed(self.seed)
        low, high = rows.min(dim=0).values, rows.max(dim=0).values  # [C]
        pivot = low + torch.rand(low.shape, generator=g) * (high - low)
        half = torch.maximum(pivot - low, high - pivot).clamp_min(_EPS)  # work space: pivot +- 2 x wider side
        self._grow((pivot - 2 * half)[None], (pivot + 2 * half)[None], g)
        paths, _ = self._paths(rows)  # [T, M, height+1]
        mass = torch.zeros_like(self.mass)
        mass.scatter_add_(1, paths.reshape(paths.shape[0], -1), torch.ones(paths.shape[0], paths[0].numel()))
        self.mass.copy_(mass)
        self.n_reference.fill_(float(rows.shape[0]))

    def _paths(self, rows: Tensor) -> Tuple[Tensor, Tensor]:
        """Node visited at each depth and the split channel used there. rows [M, C] -> [T, M, height+1] x2."""
        T = self.split_dim.shape[0]
        M = rows.shape[0]
        node = torch.zeros(T, M, dtype=torch.long, device=rows.device)
        nodes, dims = [node], []
        expanded = rows.unsqueeze(0).expand(T, M, rows.shape[1])  # [T, M, C]
        for _ in range(self.height):
            dim = self.split_dim.gather(1, node)  # [T, M]
            value = expanded.gather(2, dim.unsqueeze(2)).squeeze(2)  # [T, M]
            go_right = (value >= self.split_value.gather(1, node)).long()
            node = 2 * node + 1 + go_right
            nodes.append(node)
            dims.append(dim)
        dims.append(torch.full_like(node, -1))
        return torch.stack(nodes, dim=2), torch.stack(dims, dim=2)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        paths, dims = self._paths(x.reshape(B * L, C))  # [T, B*L, height+1]
        T = paths.shape[0]
        mass = self.mass.gather(1, paths.reshape(T, -1)).reshape(paths.shape)  # [T, B*L, height+1]
        depth = torch.arange(self.height + 1, device=x.device)
        small = (mass < self.size_limit * self.n_reference).long()  # stop at the first node with too little mass
        small[:, :, -1] = 1
        stop = small.argmax(dim=2, keepdim=True)  # [T, B*L, 1]
        density = mass.gather(2, stop).squeeze(2) * torch.pow(2.0, stop.squeeze(2).float()) / self.n_reference
        surprise = -torch.log2(density + 1.0 / self.n_reference)  # [T, B*L]
        used = (depth[None, None, :] == stop - 1) & (dims >= 0)  # the split that led into the stopping node
        credit = torch.zeros(T, B * L, C, device=x.device)
        credit.scatter_add_(2, dims.clamp_min(0), used.float() * surprise.clamp_min(0.0).unsqueeze(2))  # [T, B*L, height+1] -> C
        score = surprise.mean(dim=0).reshape(B, L)  # [T, B*L] -> [B, L]
        return score, credit.mean(dim=0).reshape(B, L, C)  # [T, B*L, C] -> [B, L, C]
