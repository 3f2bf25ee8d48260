"""Graph passes that streamdet adds to Inductor when it compiles an exported bundle (aoti.py): compiler choices only,
the exported program and the model code stay as they are.

`UnfuseBiasAdd`: Inductor keeps a linear layer as one `addmm` call on the CPU (it splits it only for GPUs), and ATen's
`addmm` first copies the bias into every row of the output, then lets the GEMM add onto it: a pass over the output
that TorchScript's `linear` makes too. Where every use of the result is elementwise (GELU, ReLU, a residual add),
the pass computes `mm` and leaves the bias add to the kernels that read the product anyway, so it costs no pass of
its own. Where the product feeds another extern call (attention, a GEMM) the `addmm` stays (the add would then
need a kernel of its own).
"""

from __future__ import annotations

import logging

import torch

try:  # Inductor internals: a torch that moved them compiles without the pass rather than not at all
    from torch._inductor.custom_graph_pass import CustomGraphPass
    from torch._inductor.utils import is_pointwise_use
except ImportError:  # pragma: no cover - depends on the torch release
    CustomGraphPass, is_pointwise_use = object, None

log = logging.getLogger(__name__)
aten = torch.ops.aten

VERSION = "unfuse-bias-1"  # part of the package cache key: a changed recipe compiles anew


class UnfuseBiasAdd(CustomGraphPass):
    """addmm(bias, a, b) -> mm(a, b) + bias where every use is elementwise (through views)."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.nodes):
            if self.applies(node):
                bias, left, right = node.args
                with graph.inserting_before(node):
                    product = graph.call_function(aten.mm.default, (left, right))
                    product.meta = dict(node.meta)  # same shape, dtype and strides as the addmm result
                    added = graph.call_function(aten.add.Tensor, (product, bias))
                    added.meta = dict(node.meta)
                node.replace_all_uses_with(added)
                graph.erase_node(node)

    @staticmethod
    def applies(node: torch.fx.Node) -> bool:
        if node.op != "call_function" or node.target is not aten.addmm.default or node.kwargs or len(node.args) != 3:
            return False  # beta/alpha other than 1 come as kwargs
        bias = node.args[0]
        value = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
        return value is not None and value.dim() == 1 and bool(node.users) and all(
            is_pointwise_use(use) for use in node.users)

    def uuid(self) -> str:  # Inductor's own compile cache keys on it
        return VERSION


def inductor_configs() -> dict:
    """What compile_package adds to Inductor's configuration."""
    if is_pointwise_use is None:
        log.warning("this torch has no torch._inductor.custom_graph_pass: compiling without streamdet's graph pass")
        return {}
    return {"post_grad_custom_post_pass": UnfuseBiasAdd()}
