"""MIXAD (Kim et al., CIKM 2024): memory-augmented graph recurrent forecasting with per-channel explanations.

Channels are nodes of a learned graph (adjacency from node embeddings). A GRU whose gates are diffusion graph
convolutions (K hops over the adjacency) walks through the window and forecasts each next step. Its node states
query a memory bank of prototypes; the retrieved prototype joins the state for the forecast. Training: forecast
error + memory consistency (states stay close to their prototype) + a KL term that spreads use over all
prototypes. Score per step = forecast error + `memory_weight` x memory deviation (distance of each node's state to
its prototype), per channel: node-level errors are the explanation. The first step has no forecast and takes the
score of the second. Shapes: besides B L C D, N nodes (= C channels) and M memory prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require


class DiffusionConv(nn.Module):
    """sum_k A^k X W_k over nodes: X [B, N, F] -> [B, N, out]."""

    def __init__(self, features: int, out: int, hops: int):
        super().__init__()
        self.weights = nn.ModuleList([nn.Linear(features, out, bias=(k == 0)) for k in range(hops + 1)])

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        total = torch.zeros(x.shape[0], x.shape[1], self.weights[0].out_features, device=x.device)
        h = x
        for k, weight in enumerate(self.weights):
            if k > 0:
                h = adjacency @ h  # [B, N, F]
            total = total + weight(h)
        return total


class GraphGRUCell(nn.Module):
    def __init__(self, features: int, hidden: int, hops: int):
        super().__init__()
        self.gates = DiffusionConv(features + hidden, 2 * hidden, hops)
        self.candidate = DiffusionConv(features + hidden, hidden, hops)
        self.hidden = hidden

    def forward(self, x: Tensor, h: Tensor, adjacency: Tensor) -> Tensor:
        z_r = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1), adjacency))  # [B, N, 2D]
        z, r = z_r[..., : self.hidden], z_r[..., self.hidden:]
        c = torch.tanh(self.candidate(torch.cat([x, r * h], dim=-1), adjacency))
        return z * h + (1 - z) * c


@dataclass(frozen=True)
class MIXADParams(Hyper):
    hidden: int = 32
    node_dim: int = 16
    hops: int = 2
    memories: int = 16
    memory_weight: float = 0.5

    def check(self) -> None:
        require(self.hops >= 1, "hops", "must be >= 1 (diffusion steps over the learned graph)", self.hops)
        require(self.memories >= 1, "memories", "must be >= 1", self.memories)


class MIXAD(Detector):
    name = "mixad"
    Params = MIXADParams
    presets = {"tiny": {"hidden": 8, "node_dim": 4, "hops": 1, "memories": 4}}

    def __init__(self, n_channels: int, window: int, hp: MIXADParams = MIXADParams()):
        super().__init__(n_channels, window, hp)
        hidden, node_dim, hops, memories, memory_weight = hp.hidden, hp.node_dim, hp.hops, hp.memories, hp.memory_weight
        self.nodes = nn.Parameter(torch.randn(n_channels, node_dim) * 0.3)
        self.cell = GraphGRUCell(1, hidden, hops)
        self.memory = nn.Parameter(torch.randn(memories, hidden) * 0.3)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.hidden = hidden
        self.memory_weight = memory_weight

    def adjacency(self) -> Tensor:
        return torch.softmax(torch.relu(self.nodes @ self.nodes.t()), dim=-1)  # [N, N]

    def run(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> forecasts [B, L-1, C], states [B, L-1, C, D], retrieved prototypes [B, L-1, C, D],
        memory attention [B, L-1, C, M], for steps 1..L-1. Only the recurrence is a loop; memory reads and the
        forecast head run once over all steps."""
        B, L, C = x.shape
        adjacency = self.adjacency()
        h = torch.zeros(B, C, self.hidden, device=x.device)
        steps: List[Tensor] = []
        for t in range(L - 1):
            h = self.cell(x[:, t].unsqueeze(-1), h, adjacency)  # [B, C, D]
            steps.append(h)
        states = torch.stack(steps, 1)  # [B, L-1, C, D]
        attn = torch.softmax(states @ self.memory.t(), dim=-1)  # [B, L-1, C, M]
        protos = attn @ self.memory  # [B, L-1, C, D]
        forecasts = self.head(torch.cat([states, protos], dim=-1)).squeeze(-1)  # [B, L-1, C]
        return forecasts, states, protos, attn

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        forecast, states, protos, attn = self.run(x)
        error = ((forecast - x[:, 1:]) ** 2).mean()
        consistency = ((states - protos.detach()) ** 2).mean() + ((states.detach() - protos) ** 2).mean()
        usage = attn.reshape(-1, attn.shape[-1]).mean(dim=0)  # [M]
        kl_uniform = (usage * torch.log(usage * usage.shape[0] + 1e-6)).sum()
        return error + 0.1 * consistency + 0.1 * kl_uniform

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        forecast, states, protos, _ = self.run(x)
        error = (forecast - x[:, 1:]) ** 2  # [B, L-1, C]
        deviation = ((states - protos) ** 2).mean(dim=-1)  # [B, L-1, C]
        contrib = error + self.memory_weight * deviation
        contrib = torch.cat([contrib[:, :1], contrib], dim=1)  # [B, L, C]: step 0 takes step 1's score
        return contrib.mean(dim=-1), contrib
