"""lstm_ae (the default model) scored grouped with batched matmuls written out, faster than vmap's generic path.

With the paper's free-running decoder (`decoder_input: prediction`) each decoder step is fed its own previous
output, x_hat = W_out h + b_out, so its gates W_ih x_hat + W_hh h + b are (W_ih W_out + W_hh) h + (W_ih b_out + b):
one [H, 4H] matmul per step instead of three, and the reconstruction is one matmul over all steps at the end. Each
row's weights are gathered from the stack (grouped.py's tensors, LSTMs in LinearOpsLSTM's layout); the input
projections and the error model are batched matmuls over rows (numpy's, OpenBLAS: about half torch's CPU time
here, `_bmm`), and the recurrence is one TorchScript function (`_recurrence`). Scripted, its steps run in torch's
interpreter without the GIL: written as Python ops (about ten per step, each giving the GIL up and taking it back),
a grouped call took 37 ms alone and 520 ms beside a thread running Python (the daemon's decoding thread), which is
what held per-entity bundles to half the fleet bundle's records/s. Reassociating the products changes
float rounding only; grouped.py checks the result against each sampled bundle's own module before it serves, and
uses vmap's generic path if it does not match.

The decoder reconstructs the window last step first, so the scores of a window's newest points come out of its
first steps: with `tail` (the pipeline needs only the points new since the entity's last window, a stride's worth)
the decoder stops after `tail` steps and the error model runs on those steps only. At the stride ceiling (20 of
100) that skips 80 of the 199 recurrent steps and four fifths of the output work, on the one thread that scores
every bundle.
"""

from __future__ import annotations

import functools
import json
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import tail_steps

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


def score(fused: dict[str, Tensor], raw: Tensor, members: Tensor, tail: Optional[int] = None) \
        -> tuple[Tensor, Tensor]:
    """raw [B, L, C], members [B] -> (scores [B, T], contributions [B, T, C]) of the last T = `tail` steps (all L
    when None), row b by member b's weights."""
    rows = members.numpy()
    w = {k: torch.from_numpy(v.detach().numpy()[rows]) for k, v in fused.items()}  # [B, ...] each row's own
    x = (raw - w["mean"].unsqueeze(1)) / w["std"].unsqueeze(1)  # [B, L, C]
    B, L, _ = x.shape
    T = tail_steps(tail, L)
    projected = _bmm(x, w["enc_ih"]).add_(w["enc_bias"].unsqueeze(1))  # [B, L, 4H]: every step's input projection
    states = _scripted()(projected, w["enc_hh"], w["dec_hh"], w["dec_bias"].unsqueeze(1), T)  # [B, T, H]
    centred = (x[:, L - T:] - _bmm(states, w["out_w"]).add_(w["out_b"].unsqueeze(1))).abs_().sub_(
        w["error_mean"].unsqueeze(1))  # [B, T, C]
    precision = w["precision"]  # [B, C, C]
    scores = _bmm(centred, precision).mul_(centred).sum(dim=-1).clamp_(min=0.0)  # [B, T]
    contrib = (centred * centred).mul_(torch.diagonal(precision, dim1=1, dim2=2).unsqueeze(1))  # [B, T, C]
    return scores, contrib


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """a [B, n, k] @ b [B, k, m] -> [B, n, m] by numpy's matmul on the tensors' memory: one OpenBLAS gemm per row,
    about half the CPU time of torch.bmm for these small per-row products on the benchmark machine (AMD EPYC, torch
    2.13's MKL: the input projection [256, 100, 38] x [256, 38, 128] 2.8 vs 4.9 ms). numpy releases the GIL for it,
    as torch does."""
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


def _recurrence(projected: Tensor, enc_hh: Tensor, dec_hh: Tensor, dec_bias: Tensor, tail: int) -> Tensor:
    """The encoder over every step's projected input [B, L, 4H], then `tail` free-running decoder steps from its
    final state -> the decoder's hidden states [B, tail, H] in time order (step L, the first decoded, last)."""
    B, L = projected.shape[0], projected.shape[1]
    H = enc_hh.shape[1]
    h = projected.new_zeros(B, 1, H)
    c2 = projected.new_zeros(B, 1, H)
    for t in range(L):
        h, c2 = _cell(torch.baddbmm(projected[:, t:t + 1], h, enc_hh), c2)
    states = projected.new_empty(B, tail, H)
    states[:, tail - 1:] = h
    for t in range(tail - 2, -1, -1):
        h, c2 = _cell(torch.baddbmm(dec_bias, h, dec_hh), c2)
        states[:, t:t + 1] = h
    return states


def _cell(gates: Tensor, c2: Tensor) -> tuple[Tensor, Tensor]:
    """LinearOpsLSTM's step on [B, 1, 4H] pre-activations (g gate doubled: tanh(z) = 2 sigmoid(2z) - 1), the cell
    state kept doubled too (c2 = 2c), so that tanh(c) is 2 sigmoid(c2) - 1: torch's tanh costs about five times its
    sigmoid here (22 vs 4 us on [256, 1, 32]). -> (h, c2)."""
    i, f, g, o = torch.sigmoid(gates).chunk(4, -1)
    y = torch.addcmul(i.neg(), i, g, value=2.0)  # i tanh(g's pre-activation)
    c2 = torch.addcmul(y, f, c2).add_(y)  # 2 (f c + y)
    return torch.addcmul(o.neg(), o, torch.sigmoid(c2), value=2.0), c2  # o tanh(c)


@functools.lru_cache(maxsize=1)
def _scripted():
    """`_recurrence` scripted, once per process (when the first lstm_ae group is fused)."""
    from .torchscript import script_function

    return script_function(_recurrence)
