"""Issue 15's compile-count target: a compiled function called with 20 batch sizes and 10
sequence lengths (200 calls) costs at most 2 tilefuse compiles per graph, with every result
equal to eager's, counted through ``tilefuse.stats()``.

Nothing is marked dynamic: this is what a user gets from ``torch.compile(model,
backend="tilefuse")``. Dynamo compiles the first shape statically; at the first call with
another shape its automatic dynamic shapes recompile with the changed dimensions symbolic,
and tilefuse compiles that graph once for every size. Dynamo makes dimensions dynamic as it
sees them change, so the order is chosen so that the second call changes both (an order
that changed only the sequence length first would cost a third compile when the batch size
first changes: Dynamo's choice, not tilefuse's; ``dynamic=True`` or ``mark_dynamic`` on
both dimensions compile once). Sizes start at 2: Dynamo specializes sizes 0 and 1.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tilefuse
from tests.compile_check import assert_same, check_train_step

BATCHES = list(range(2, 22))  # 20 batch sizes
SEQS = [2, 3, 4, 5, 6, 7, 9, 11, 13, 16]  # 10 sequence lengths
DIM = 8

pytestmark = pytest.mark.usefixtures("fresh_compile_state")


class Mixer(nn.Module):
    """Attention-free and small: a GEMM (a linear layer) with a GELU, then the mean over the
    sequence taken out (a reduction over a symbolic extent). Few kernels, since the Triton
    interpreter costs tens of ms per launch; no max reduction, whose NaN-propagating
    combine the interpreter runs element by element."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(x))
        return h - h.mean(1, keepdim=True)


def _shapes() -> list[tuple[int, int]]:
    shapes = [(b, s) for b in BATCHES for s in SEQS]
    random.Random(15).shuffle(shapes)
    (b0, s0), (b1, s1) = shapes[:2]
    assert b0 != b1 and s0 != s1, "the second call must change both dimensions"
    return shapes


def _assert_at_most_two_compiles_per_graph(graphs: int) -> None:
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["specializations_compiled"] == 0, stats
    assert stats["symbolic_fallbacks"] == 0, stats
    # the first shape's static graph(s), then one symbolic graph for every other shape
    assert stats["graphs_compiled_symbolic"] == graphs, stats
    assert stats["graphs_compiled"] <= 2 * graphs, stats


def test_200_shapes_cost_at_most_two_compiles_forward():
    torch.manual_seed(0)
    model = Mixer().eval()
    compiled = torch.compile(copy.deepcopy(model), backend="tilefuse")
    shapes = _shapes()
    assert len(shapes) == 200
    with torch.no_grad():
        for b, s in shapes:
            x = torch.randn(b, s, DIM)
            try:
                assert_same(compiled(x), model(x))
            except AssertionError as exc:
                raise AssertionError(f"batch {b}, seq {s}: differs from eager: {exc}") from exc
    _assert_at_most_two_compiles_per_graph(graphs=1)


def test_forward_and_backward_cost_at_most_two_compiles_each():
    """Training over 20 of the shapes (the interpreter's time): forward and backward
    graphs, at most two compiles each, every output and gradient equal to eager's."""
    torch.manual_seed(0)
    model = Mixer()
    comp = copy.deepcopy(model)
    compiled = torch.compile(comp, backend="tilefuse")
    for b, s in _shapes()[:20]:
        check_train_step(model, comp, compiled, torch.randn(b, s, DIM))
    _assert_at_most_two_compiles_per_graph(graphs=2)
