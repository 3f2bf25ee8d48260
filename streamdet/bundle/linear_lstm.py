"""nn.LSTM (and nn.Linear) written with matmuls and pointwise ops, so that torch.func.vmap batches them over stacked
weights quickly.

vmap has no batching rule for `aten::lstm` (it refuses to run it), so a model rebuilt for grouped scoring
(grouped.py) has each of its LSTMs swapped for this module: the same equations as torch's LSTM (gates i, f, g, o),
hence, within float rounding, the same output (grouped.py checks it against the bundle's own module).
Only what the served detectors use is supported (batch_first, unidirectional, no projection); anything else is
refused with the reason, and the bundle is scored on its own.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn


class NotGroupable(Exception):
    """A bundle's model cannot be scored in a grouped call; the message says why."""


class LinearOpsLSTM(nn.Module):
    """forward(x [B, T, I], (h0, c0) [layers, B, H] or None) -> (out [B, T, H], (h, c) [layers, B, H]).

    Stored for speed under vmap, not as nn.LSTM stores them: weights transposed (`ih_lK` [I, 4H], `hh_lK` [H, 4H],
    contiguous, so batched matmuls need no copy), the two biases summed (`bias_lK` [4H]), and the rows of the cell
    gate g doubled, because tanh(z) = 2 sigmoid(2z) - 1 and this CPU build's tanh costs 4x its sigmoid: one sigmoid
    over all four gates per step (doubling is exact in floating point)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.layers, self.hidden = lstm.num_layers, lstm.hidden_size
        for name, tensor in self.tensors(lstm).items():
            self.register_buffer(name, tensor)

    def __getattr__(self, name: str):
        """nn.LSTM's parameter names (`weight_ih_lK`, `weight_hh_lK`, `bias_ih_lK`, `bias_hh_lK`) read back from this
        layout, for models that read their LSTM's weights (lstm_ae's folded free-running decoder); `bias_ih_lK` is
        the summed bias and `bias_hh_lK` zeros, which is what such a model adds up."""
        kind, _, layer = name.rpartition("_l")
        if kind not in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") or not layer.isdigit():
            return super().__getattr__(name)
        stored = super().__getattr__(("bias" if kind.startswith("bias") else kind[len("weight_"):]) + f"_l{layer}")
        if kind == "bias_hh":
            return torch.zeros_like(stored)
        unscale = torch.ones(4 * self.hidden, dtype=stored.dtype)
        unscale[2 * self.hidden:3 * self.hidden] = 0.5  # the g rows were doubled (exact both ways)
        return stored * unscale if kind == "bias_ih" else (stored * unscale).t()

    @staticmethod
    def tensors(lstm: nn.LSTM) -> dict[str, Tensor]:
        """The module's tensors computed from an nn.LSTM's (new tensors: the LSTM may be reused)."""
        if lstm.bidirectional or lstm.proj_size or not lstm.batch_first or not lstm.bias:
            raise NotGroupable("an LSTM that is bidirectional, projected, not batch_first or without bias")
        H = lstm.hidden_size
        scale = torch.ones(4 * H)
        scale[2 * H:3 * H] = 2.0  # the g rows
        out = {}
        for k in range(lstm.num_layers):
            w = {name: getattr(lstm, f"{name}_l{k}").detach() for name in ("weight_ih", "weight_hh", "bias_ih",
                                                                           "bias_hh")}
            out[f"ih_l{k}"] = (w["weight_ih"] * scale[:, None]).t().contiguous()  # [I, 4H]
            out[f"hh_l{k}"] = (w["weight_hh"] * scale[:, None]).t().contiguous()  # [H, 4H]
            out[f"bias_l{k}"] = (w["bias_ih"] + w["bias_hh"]) * scale  # [4H]
        return out

    def forward(self, x: Tensor, state: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if state is None:
            zeros = x.new_zeros(self.layers, x.shape[0], self.hidden)  # [layers, B, H]
            state = (zeros, zeros)
        h0, c0 = state
        layer_input, last_h, last_c = x, [], []
        for k in range(self.layers):
            projected = layer_input @ getattr(self, f"ih_l{k}") + getattr(self, f"bias_l{k}")  # [B, T, 4H]
            recurrent = getattr(self, f"hh_l{k}")  # [H, 4H]
            h, c, outputs = h0[k], c0[k], []
            for t in range(x.shape[1]):
                h, c = self._cell(projected[:, t] + h @ recurrent, c)
                outputs.append(h)
            layer_input = outputs[0].unsqueeze(1) if len(outputs) == 1 else torch.stack(outputs, dim=1)  # [B, T, H]
            last_h.append(h)
            last_c.append(c)
        if self.layers == 1:
            return layer_input, (last_h[0].unsqueeze(0), last_c[0].unsqueeze(0))
        return layer_input, (torch.stack(last_h), torch.stack(last_c))

    def _cell(self, gates: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        """One step from the pre-activations [B, 4H] (torch's gate order i, f, g, o; g doubled) -> (h, c) [B, H]."""
        H = self.hidden
        s = torch.sigmoid(gates)
        g = 2.0 * s[:, 2 * H:3 * H] - 1.0  # tanh of the cell gate
        c = s[:, H:2 * H] * c + s[:, :H] * g
        return s[:, 3 * H:] * (2.0 * torch.sigmoid(2.0 * c) - 1.0), c  # h = o * tanh(c)


class TransposedLinear(nn.Module):
    """nn.Linear with its weight stored transposed [in, out] and contiguous: a batched matmul without a copy."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        tensors = self.tensors(linear)
        self.register_buffer("weight_t", tensors["weight_t"])
        self.register_buffer("bias", tensors.get("bias"))

    @staticmethod
    def tensors(linear: nn.Linear) -> dict[str, Tensor]:
        out = {"weight_t": linear.weight.detach().t().contiguous()}  # [in, out]
        if linear.bias is not None:
            out["bias"] = linear.bias.detach().clone()
        return out

    @property
    def weight(self) -> Tensor:
        """nn.Linear's [out, in] weight, for models that read it (lstm_ae's folded decoder)."""
        return self.weight_t.t()

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.weight_t
        return out if self.bias is None else out + self.bias


def vmappable(module: nn.Module) -> nn.Module:
    """Replace (in place) every nn.LSTM inside `module` by a LinearOpsLSTM and every nn.Linear by a
    TransposedLinear; other recurrent layers are refused (NotGroupable)."""
    for name, child in module.named_children():
        if isinstance(child, nn.LSTM):
            setattr(module, name, LinearOpsLSTM(child))
        elif isinstance(child, nn.Linear):
            setattr(module, name, TransposedLinear(child))
        elif isinstance(child, nn.RNNBase):
            raise NotGroupable(f"{type(child).__name__} has no linear-ops formulation here")
        else:
            vmappable(child)
    return module


def vmappable_tensors(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """The tensors `vmappable(copy of module)` would hold, by name, computed without building modules (new tensors:
    one rebuilt model is loaded with each bundle's weights in turn, grouped.py)."""
    out = {prefix + name: t.detach().clone() for name, t in module.named_parameters(recurse=False)}
    out.update({prefix + name: t.detach().clone() for name, t in module.named_buffers(recurse=False)})
    for name, child in module.named_children():
        if isinstance(child, nn.LSTM):
            out.update({f"{prefix}{name}.{k}": t for k, t in LinearOpsLSTM.tensors(child).items()})
        elif isinstance(child, nn.Linear):
            out.update({f"{prefix}{name}.{k}": t for k, t in TransposedLinear.tensors(child).items()})
        elif isinstance(child, nn.RNNBase):
            raise NotGroupable(f"{type(child).__name__} has no linear-ops formulation here")
        else:
            out.update(vmappable_tensors(child, f"{prefix}{name}."))
    return out
