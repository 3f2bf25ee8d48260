"""Small inputs and models shared by the model-specific tests (the registry-wide suite builds its own batches)."""

from __future__ import annotations

import torch

from streamdet.models import registry

L, C = 32, 4


def tiny(name: str, **params):
    """A model on its tiny preset with `params` overriding it, seeded, in eval mode."""
    torch.manual_seed(0)
    return registry.build(name, C, L, "tiny", params).eval()


def wave(n: int = 3, shift: float = 5.0) -> torch.Tensor:
    """n phase-shifted sine windows [n, L, C]: smooth, deterministic, different per row and channel."""
    t = torch.arange(L, dtype=torch.float32)[None, :, None] + shift * torch.arange(n)[:, None, None]
    return torch.sin(t / 4.0 + torch.arange(C)[None, None, :])  # [B, L, C]
