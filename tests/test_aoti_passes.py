"""streamdet's Inductor graph pass (streamdet/bundle/aoti_passes.py), on the ATen graph a bundle compiles from.

No compiler needed: the pass rewrites the graph, the rewritten graph runs in Python. tests/test_bundle_compile.py
compiles with it (every package does) and checks the package scores like the exported program.
"""

from __future__ import annotations

import torch
from torch import nn

from streamdet.bundle.aoti_passes import UnfuseBiasAdd

aten = torch.ops.aten


class Block(nn.Module):
    """A feed-forward block with a residual (elementwise uses) beside a product that feeds a GEMM (kept fused)."""

    def __init__(self):
        super().__init__()
        self.up, self.down, self.query = nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = x + self.down(nn.functional.gelu(self.up(x)))  # up and down: only elementwise uses
        q = self.query(h)  # its product goes straight into a matrix product
        return q @ h.transpose(1, 2)


def aten_graph(module: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    program = torch.export.export(module, (x,), strict=False).run_decompositions()
    return program.module()


def targets(graph: torch.fx.Graph) -> list:
    return [n.target for n in graph.nodes if n.op == "call_function"]


def test_bias_adds_move_to_elementwise_uses_and_the_result_is_unchanged():
    torch.manual_seed(0)
    module, x = Block().eval(), torch.randn(3, 5, 8)
    graph_module = aten_graph(module, x)
    assert targets(graph_module.graph).count(aten.addmm.default) == 3
    UnfuseBiasAdd()(graph_module.graph)
    graph_module.recompile()
    found = targets(graph_module.graph)
    assert found.count(aten.mm.default) == 2, found  # up and down
    assert found.count(aten.addmm.default) == 1, found  # query: its use is a matrix product, not elementwise
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), module(x), rtol=1e-6, atol=1e-6)


def test_an_addmm_with_scaling_or_a_matrix_bias_is_left_alone():
    graph = torch.fx.Graph()
    bias, a, b = (graph.placeholder(n) for n in ("bias", "a", "b"))
    bias.meta["val"] = torch.empty(4, 4)  # a matrix, not a row of biases
    scaled_bias = graph.placeholder("row")
    scaled_bias.meta["val"] = torch.empty(4)
    first = graph.call_function(aten.addmm.default, (bias, a, b))
    second = graph.call_function(aten.addmm.default, (scaled_bias, a, b), {"beta": 0.5})
    graph.output(graph.call_function(aten.relu.default, (graph.call_function(aten.add.Tensor, (first, second)),)))
    UnfuseBiasAdd()(graph)
    assert targets(graph).count(aten.addmm.default) == 2
