"""MIXAD (Kim et al., ICPR 2024, "Memory-Induced Explainable Time Series Anomaly Detection").

Channels are the nodes of a graph learned from the memory: node embeddings E1 = We1 M and E2 = We2 M (M the memory
bank), adjacency from their cosine similarity, made sparse (straight-through Gumbel sampling in training, the
noise-free decision at scoring so that scores are deterministic), self-loops removed. Diffusion runs both ways: the
scaled Laplacians of A(E1, E2) and A(E2, E1) are the two supports of a Chebyshev graph convolution (`hops` terms
each) inside a GRU cell (STRGC) that walks through the window. At every step each node's state queries the memory:
attention over the `memories` prototypes (softmax of (h Wq) M^T), whose top-2 slots are the positive and negative
for the contrastive (triplet) and consistency terms. A graph GRU decoder reconstructs the window in reverse order
from the last state and its retrieved memory. Loss = MAE reconstruction + `lamb_cont` triplet + `lamb_cons`
consistency + `lamb_kl` KL(aggregated memory use || uniform), the reference command line's weights for SMD.
Score (the paper's contribution): the shift of each node's memory-attention pattern, Jensen-Shannon divergence
between its attention at step t and at step t-1; per node, which is the explanation; the step's score is the largest
node shift, as in the reference evaluation. Step 0 has no predecessor and takes step 1's shift. `recon_weight` > 0
adds the reconstruction error (off by default, as in the paper). Deviation: the reference scores one attention per
stride-1 window (the last state) and removes seasonality with an offline STL fit; a streaming detector cannot fit STL
on the future, so the shift is taken between consecutive steps inside the window instead.
Shapes: besides B L C D, N nodes (= C channels), M memory slots, F memory width.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require


@dataclass(frozen=True)
class MIXADParams(Hyper):
    hidden: int = 64  # rnn_units
    hops: int = 3  # max_diffusion_step: Chebyshev terms per support
    memories: int = 5  # mem_num
    memory_dim: int = 64  # mem_dim
    lamb_cont: float = 0.01
    lamb_cons: float = 0.1
    lamb_kl: float = 0.0001
    recon_weight: float = 0.0
    recompute: bool = True  # training only: each recurrent step is recomputed in the backward pass, not stored

    def check(self) -> None:
        require(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        require(self.hops >= 2, "hops", "must be >= 2 (Chebyshev terms I and L over the learned graph)", self.hops)
        require(self.memories >= 2, "memories", "must be >= 2 (positive and negative slots)", self.memories)
        require(self.memory_dim >= 1, "memory_dim", "must be >= 1", self.memory_dim)
        require(self.recon_weight >= 0, "recon_weight", "must be >= 0", self.recon_weight)


class ChebConv(nn.Module):
    """sum over supports S and k < hops of T_k(S) X W: X [B, N, F] -> [B, N, out] (T_0 = I, T_1 = S, T_k = 2 S
    T_(k-1) - T_(k-2))."""

    def __init__(self, features: int, out: int, hops: int):
        super().__init__()
        self.hops = hops
        self.linear = nn.Linear(2 * hops * features, out)

    def forward(self, x: Tensor, supports: List[Tensor]) -> Tensor:
        terms: List[Tensor] = []
        for support in supports:
            previous, current = x, support @ x  # [B, N, F]
            terms.append(previous)
            terms.append(current)
            for _ in range(2, self.hops):
                previous, current = current, 2 * (support @ current) - previous
                terms.append(current)
        return self.linear(torch.cat(terms, dim=-1))


class STRGCCell(nn.Module):
    """GRU cell whose gates are Chebyshev graph convolutions."""

    def __init__(self, features: int, hidden: int, hops: int):
        super().__init__()
        self.gates = ChebConv(features + hidden, 2 * hidden, hops)
        self.candidate = ChebConv(features + hidden, hidden, hops)
        self.hidden = hidden

    def forward(self, x: Tensor, h: Tensor, supports: List[Tensor]) -> Tensor:
        z_r = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1), supports))  # [B, N, 2D]
        z, r = z_r[..., : self.hidden], z_r[..., self.hidden:]
        c = torch.tanh(self.candidate(torch.cat([x, z * h], dim=-1), supports))
        return r * h + (1 - r) * c


class Recomputed(nn.Module):
    """A graph GRU cell whose activations are recomputed in the backward pass instead of stored. Backpropagation
    through 2 x L steps stored ~12 GB at SMD's shape (38 channels, window 100, batch 128); this way ~1.4 GB
    (docs/models.md). Training only: `loss` wraps the cells for one call, and scoring never sees the wrapper."""

    def __init__(self, cell: STRGCCell):
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, supports: List[Tensor]) -> Tensor:
        return torch.utils.checkpoint.checkpoint(self.cell, x, h, supports, use_reentrant=False)


@contextmanager
def recomputed_steps(model: "MIXAD", on: bool) -> Iterator[None]:
    """Within the block (when `on`), the model's encoder and decoder cells recompute their steps (`Recomputed`)."""
    if not on:
        yield
        return
    encoder, decoder = model.encoder, model.decoder
    model.encoder, model.decoder = Recomputed(encoder), Recomputed(decoder)
    try:
        yield
    finally:
        model.encoder, model.decoder = encoder, decoder


def js_divergence(p: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """Jensen-Shannon divergence over the last dimension of two distributions. Never negative: for nearly equal
    distributions the float sums round to about -1e-7, which would make a contribution negative (bundles refuse
    those), so the rounding is clamped away."""
    m = 0.5 * (p + q)
    log_m = torch.log(m + eps)
    divergence = 0.5 * ((p * (torch.log(p + eps) - log_m)).sum(-1) + (q * (torch.log(q + eps) - log_m)).sum(-1))
    return divergence.clamp_min(0.0)


class MIXAD(Detector):
    name = "mixad"
    Params = MIXADParams
    presets = {"tiny": {"hidden": 8, "hops": 2, "memories": 4, "memory_dim": 8}}

    def __init__(self, n_channels: int, window: int, hp: MIXADParams = MIXADParams()):
        super().__init__(n_channels, window, hp)
        self.memory = nn.Parameter(nn.init.xavier_normal_(torch.empty(hp.memories, hp.memory_dim)))
        self.query = nn.Parameter(nn.init.xavier_normal_(torch.empty(hp.hidden, hp.memory_dim)))
        self.node1 = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_channels, hp.memories)))
        self.node2 = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_channels, hp.memories)))
        self.encoder = STRGCCell(1, hp.hidden, hp.hops)
        self.decoder = STRGCCell(1, hp.hidden + hp.memory_dim, hp.hops)
        self.project = nn.Linear(hp.hidden + hp.memory_dim, 1)
        self.register_buffer("eye", torch.eye(n_channels))
        self.hidden = hp.hidden
        self.recon_weight = hp.recon_weight
        self.hp = hp

    def supports(self) -> List[Tensor]:
        """Scaled Laplacians of the learned graph in both directions: [N, N] each."""
        e1, e2 = self.node1 @ self.memory, self.node2 @ self.memory  # [N, F]
        return [self.scaled_laplacian(e1, e2), self.scaled_laplacian(e2, e1)]

    def scaled_laplacian(self, a: Tensor, b: Tensor) -> Tensor:
        norms = (a * a).sum(1, keepdim=True).sqrt() @ (b * b).sum(1, keepdim=True).sqrt().t()  # [N, N]
        similarity = ((a @ b.t()) / (norms + 1e-6) + 1) / 2  # [N, N] in [0, 1]
        if self.training:  # straight-through Gumbel sample of the edge / no-edge decision
            logits = torch.stack([similarity, 1 - similarity], dim=-1)
            gumbel = -torch.empty_like(logits).exponential_().log()
            soft = torch.softmax(logits + gumbel, dim=-1)[..., 0]
            hard = (soft > 0.5).to(soft.dtype)
            adjacency = hard - soft.detach() + soft
        else:
            adjacency = (similarity > 0.5).to(similarity.dtype)
        adjacency = adjacency * (1 - self.eye)
        laplacian = torch.diag(adjacency.sum(dim=1)) - adjacency
        lambda_max = (laplacian.max() - laplacian.min()).clamp(min=1e-6)
        return 2 * laplacian / lambda_max - self.eye

    def encode(self, x: Tensor, supports: List[Tensor]) -> Tensor:
        """x [B, L, C] -> node states at every step [B, L, C, D]."""
        B, L, C = x.shape
        h = torch.zeros(B, C, self.hidden, device=x.device, dtype=x.dtype)
        states: List[Tensor] = []
        for t in range(L):
            h = self.encoder(x[:, t].unsqueeze(-1), h, supports)
            states.append(h)
        return torch.stack(states, dim=1)

    def read_memory(self, states: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """states [..., D] -> (query [..., F], attention [..., M], retrieved value [..., F])."""
        query = states @ self.query
        attention = torch.softmax(query @ self.memory.t(), dim=-1)
        return query, attention, attention @ self.memory

    def decode(self, last: Tensor, value: Tensor, supports: List[Tensor], length: int) -> Tensor:
        """Reconstruct the window in reverse order from the last state and its memory: -> [B, L, C]."""
        h = torch.cat([last, value], dim=-1)  # [B, C, D+F]
        go = torch.zeros(last.shape[0], last.shape[1], 1, device=last.device, dtype=last.dtype)
        outputs: List[Tensor] = []
        for _ in range(length):
            h = self.decoder(go, h, supports)
            go = self.project(h)  # [B, C, 1]
            outputs.append(go.squeeze(-1))
        return torch.stack(outputs, dim=1).flip(1)  # generated last step first

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        supports = self.supports()
        with recomputed_steps(self, self.hp.recompute):
            states = self.encode(x, supports)  # [B, L, C, D]
            query, attention, value = self.read_memory(states)
            rebuilt = self.decode(states[:, -1], value[:, -1], supports, x.shape[1])
        top = attention.topk(2, dim=-1).indices  # [B, L, C, 2]
        positive, negative = self.memory[top[..., 0]].detach(), self.memory[top[..., 1]].detach()
        width = query.shape[-1]
        contrastive = F.triplet_margin_loss(query.reshape(-1, width), positive.reshape(-1, width),
                                            negative.reshape(-1, width), margin=1.0)
        consistency = F.mse_loss(query, positive)
        usage = F.log_softmax(attention.sum(dim=(0, 1, 2)), dim=-1)  # [M]
        kl_uniform = F.kl_div(usage, torch.full_like(usage, 1.0 / usage.numel()), reduction="batchmean")
        hp = self.hp
        return ((rebuilt - x).abs().mean() + hp.lamb_cont * contrastive + hp.lamb_cons * consistency
                + hp.lamb_kl * kl_uniform)

    def expected(self, x: Tensor) -> Optional[Tensor]:
        supports = self.supports()
        states = self.encode(x, supports)
        _, _, value = self.read_memory(states[:, -1])
        return self.decode(states[:, -1], value, supports, x.shape[1])

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        supports = self.supports()
        states = self.encode(x, supports)
        _, attention, value = self.read_memory(states)  # attention [B, L, C, M]
        shift = js_divergence(attention[:, 1:], attention[:, :-1])  # [B, L-1, C]
        contrib = torch.cat([shift[:, :1], shift], dim=1)  # [B, L, C]: step 0 takes step 1's shift
        if self.recon_weight > 0:
            rebuilt = self.decode(states[:, -1], value[:, -1], supports, x.shape[1])
            contrib = contrib + self.recon_weight * (rebuilt - x) ** 2
        return contrib.amax(dim=-1), contrib
