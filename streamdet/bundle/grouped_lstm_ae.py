"""lstm_ae (the default model) scored grouped with batched matmuls written out, faster than vmap's generic path.

With the paper's free-running decoder (`decoder_input: prediction`) each decoder step is fed its own previous
output, x_hat = W_out h + b_out, so its gates W_ih x_hat + W_hh h + b are (W_ih W_out + W_hh) h + (W_ih b_out + b):
one [H, 4H] matmul per step instead of three, and the reconstruction is one matmul over all steps at the end. Each
row's weights are gathered from the stack (grouped.py's tensors, LSTMs in LinearOpsLSTM's layout) and the
recurrence runs as batched matmuls over rows without vmap's per-op overhead. Reassociating the products changes
float rounding only; grouped.py checks the result against each sampled bundle's own module before it serves, and
uses vmap's generic path if it does not match.
"""

from __future__ import annotations

import json
from typing import Optional

import torch
from torch import Tensor

PREFIX = "model."


def fusable(key: tuple) -> bool:
    """A group key (grouped.group_key) of lstm_ae with one layer and the free-running decoder."""
    if key is None or key[1] != "lstm_ae":
        return False
    from ..models import registry

    try:
        hp = registry.resolve("lstm_ae", None, json.loads(key[2]))
    except Exception:  # hyper-parameters this version does not know: the generic path decides
        return False
    return hp.layers == 1 and hp.decoder_input == "prediction"


def fuse(tensors: dict[str, Tensor]) -> Optional[dict[str, Tensor]]:
    """Stacked tensors [N, ...] by name -> the fused ones [N, ...] this module scores with (None: names missing)."""
    m = PREFIX
    try:
        dec_ih, out_w, out_b = tensors[m + "decoder.ih_l0"], tensors[m + "output.weight_t"], tensors[m + "output.bias"]
        return {
            "mean": tensors["mean"], "std": tensors["std"],
            "enc_ih": tensors[m + "encoder.ih_l0"], "enc_hh": tensors[m + "encoder.hh_l0"],
            "enc_bias": tensors[m + "encoder.bias_l0"],
            "dec_hh": torch.bmm(out_w, dec_ih) + tensors[m + "decoder.hh_l0"],  # [N, H, 4H]: W_out^T W_ih^T + W_hh^T
            "dec_bias": torch.bmm(out_b.unsqueeze(1), dec_ih).squeeze(1) + tensors[m + "decoder.bias_l0"],  # [N, 4H]
            "out_w": out_w, "out_b": out_b,
            "error_mean": tensors[m + "error_mean"], "precision": tensors[m + "error_precision"],
        }
    except KeyError:
        return None


def score(fused: dict[str, Tensor], raw: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """raw [B, L, C], members [B] -> (scores [B, L], contributions [B, L, C]), row b by member b's weights."""
    w = {k: v.index_select(0, members) for k, v in fused.items()}  # [B, ...] each row's own
    x = (raw - w["mean"].unsqueeze(1)) / w["std"].unsqueeze(1)  # [B, L, C]
    B, L, _ = x.shape
    H = w["enc_hh"].shape[1]
    # [L, B, 1, 4H]: each step's input projection contiguous (added in place, not copied by baddbmm)
    projected = torch.bmm(x, w["enc_ih"]).add_(w["enc_bias"].unsqueeze(1)).transpose(0, 1).unsqueeze(2).contiguous()
    h = x.new_zeros(B, 1, H)
    c = x.new_zeros(B, 1, H)
    for t in range(L):
        h, c = _cell(torch.bmm(h, w["enc_hh"]).add_(projected[t]), c, H)
    states = x.new_empty(B, L, H)  # the decoder's hidden states in time order: step L (the first decoded) last
    states[:, L - 1:] = h
    dec_bias = w["dec_bias"].unsqueeze(1)  # [B, 1, 4H]
    for t in range(L - 2, -1, -1):
        h, c = _cell(torch.bmm(h, w["dec_hh"]).add_(dec_bias), c, H)
        states[:, t:t + 1] = h
    centred = (x - torch.baddbmm(w["out_b"].unsqueeze(1), states, w["out_w"])).abs_().sub_(
        w["error_mean"].unsqueeze(1))  # [B, L, C]
    precision = w["precision"]  # [B, C, C]
    scores = torch.bmm(centred, precision).mul_(centred).sum(dim=-1).clamp_(min=0.0)  # [B, L]
    contrib = (centred * centred).mul_(torch.diagonal(precision, dim1=1, dim2=2).unsqueeze(1))  # [B, L, C]
    return scores, contrib


def _cell(gates: Tensor, c: Tensor, H: int) -> tuple[Tensor, Tensor]:
    """LinearOpsLSTM's step (g gate doubled: tanh(z) = 2 sigmoid(2z) - 1) on [B, 1, 4H] pre-activations, in six
    ops instead of twelve: at a few thousand elements each op costs its dispatch, not its arithmetic."""
    s = torch.sigmoid(gates)
    i, f, g, o = s[..., :H], s[..., H:2 * H], s[..., 2 * H:3 * H], s[..., 3 * H:]
    c = torch.addcmul(torch.addcmul(i.neg(), i, g, value=2.0), f, c)  # f c + i (2 g - 1)
    return o * torch.tanh(c), c
