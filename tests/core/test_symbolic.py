"""``ir.symbolic``: torch's symbolic sizes as IR expressions, hints, proofs and Python text;
and index simplification over symbolic extents."""

from __future__ import annotations

import pytest
import sympy
import torch
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from tilefuse.errors import SymbolicUnsupported
from tilefuse.ir.index import FloorDiv, ModularIndexing, flatten, simplify_index, unflatten
from tilefuse.ir.nodes import index_symbols
from tilefuse.ir.symbolic import (
    hint_of,
    known_nonnegative,
    python_expr,
    size_expr,
    size_function,
    size_hints,
)
from tilefuse.kernel_spec import X


def _dynamo_inputs(fn, *args):
    """The fake (symbolic) values of the inputs of Dynamo's graph for ``fn`` compiled with
    dynamic=True (what AOTAutograd hands tilefuse's compiler)."""
    captured = []

    def backend(gm, example_inputs):
        captured.append([n.meta["example_value"] for n in gm.graph.nodes if n.op == "placeholder"])
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, dynamic=True)(*args)
    torch._dynamo.reset()
    return captured[0]


def test_sizes_of_dynamo_inputs_become_symbols_with_hints():
    (x,) = [t for t in _dynamo_inputs(lambda x: x * 2, torch.randn(5, 6)) if hasattr(t, "shape")]
    rows, cols = (size_expr(s) for s in x.shape)
    assert isinstance(rows, sympy.Symbol) and isinstance(cols, sympy.Symbol)
    assert rows != cols
    assert size_hints([x]) == {rows: 5, cols: 6}
    # Arithmetic on sizes stays symbolic, in the IR's own functions.
    assert size_expr(x.shape[0] * x.shape[1]) == rows * cols
    assert size_expr(x.shape[0] // 3) == FloorDiv(rows, 3)
    assert hint_of(size_expr(x.shape[0] * x.shape[1] + 1), size_hints([x])) == 31
    assert size_expr(7) == sympy.Integer(7)


def test_unbacked_sizes_are_refused():
    unbacked = ShapeEnv().create_unbacked_symint()
    with pytest.raises(SymbolicUnsupported, match="not a size of an input"):
        size_expr(unbacked)


def test_proofs_assume_every_size_is_at_least_two():
    s = sympy.Symbol("s0", integer=True, positive=True)
    assert known_nonnegative(s - 2)
    assert known_nonnegative(3 * s - 6)
    assert not known_nonnegative(s - 3)
    assert not known_nonnegative(-s)
    assert known_nonnegative(sympy.Integer(0))
    # Only size symbols get the assumption: an index may be 0.
    assert not known_nonnegative(sympy.Symbol("x", integer=True, nonnegative=True) - 2)


def test_proofs_through_floor_divisions_are_sound():
    """``s - (s + 1) // 2 >= 0`` (the second piece of ``chunk(2)``) is proved by bounding
    each division; every claim is checked at sizes 2..40, and what cannot be bounded
    (a product or power of a division) is not claimed."""
    s = sympy.Symbol("s0", integer=True, positive=True)
    t = sympy.Symbol("s1", integer=True, positive=True)
    assert known_nonnegative(s - FloorDiv(s + 1, 2))
    assert known_nonnegative(FloorDiv(s + 1, 2) - 1)
    assert not known_nonnegative(s * FloorDiv(s, 2) - 3)  # not linear in the division
    candidates = [
        s - FloorDiv(s + 1, 2), s - 1 - FloorDiv(s, 2), FloorDiv(s, 2) - 1, FloorDiv(s, 3) - 1,
        2 * FloorDiv(s, 2) - s + 1, t - FloorDiv(s * t, s + 1), FloorDiv(s + t, 2) - t,
        3 * FloorDiv(s, 3) - s + 2, s - 2 * FloorDiv(s + 1, 2) + 1, FloorDiv(s - 2, 4),
    ]  # fmt: skip
    for expr in candidates:
        if known_nonnegative(expr):
            for a in range(2, 41):
                for b in (2, 3, 7):
                    assert int(expr.subs({s: a, t: b})) >= 0, (expr, a, b)


def test_python_text_of_sizes_evaluates_like_the_expression():
    s0, s1 = sympy.symbols("s0 s1", integer=True, positive=True)
    exprs = [s0 * s1 + 3, FloorDiv(s0 + 1, 2), ModularIndexing(s0 * s1, 2, s1), s0**2]
    fn = size_function(exprs, ["s0", "s1"])
    for a, b in [(2, 3), (7, 5), (64, 17)]:
        assert fn(a, b) == (a * b + 3, (a + 1) // 2, ((a * b) // 2) % b, a * a)
    assert python_expr(FloorDiv(s0, 4)) == "(s0 // 4)"
    with pytest.raises(SymbolicUnsupported):
        python_expr(s0 / 2)


def test_flatten_unflatten_over_a_symbolic_extent_simplifies_to_the_index():
    s = sympy.Symbol("s0", integer=True, positive=True)
    sizes = [s, sympy.Integer(6)]
    round_trip = flatten(unflatten(X, sizes), sizes)
    assert simplify_index(round_trip, {X: 6 * s}) == X
    # A transposed view keeps its symbolic strides.
    (i, j) = index_symbols("i", 2)
    assert simplify_index(j * s + i, {i: s, j: sympy.Integer(6)}) == j * s + i


def test_index_bounds_of_products_with_sizes_terminate():
    s = sympy.Symbol("s0", integer=True, positive=True)
    expr = 2 * s * ModularIndexing(X, s, 4) + ModularIndexing(X, 1, s)
    # Used to recurse without end on the product of a size and an index.
    assert simplify_index(expr, {X: 4 * s}) == 2 * s * FloorDiv(X, s) + ModularIndexing(X, 1, s)
