"""Index algebra: the simplifications that make views free, checked numerically too."""

from __future__ import annotations

import itertools

import pytest
import sympy

from tilefuse.ir.index import FloorDiv, ModularIndexing, flatten, simplify_index, unflatten

x = sympy.Symbol("x", integer=True, nonnegative=True)


def evaluate(expr, value):
    return int(expr.subs(x, value).doit())


def test_split_then_merge_is_identity():
    assert simplify_index(FloorDiv(x, 8) * 8 + ModularIndexing(x, 1, 8), {x: 64}) == x


@pytest.mark.parametrize("sizes", [(8, 8), (7, 13, 257), (1, 5, 1, 3), (2, 3, 4, 5)])
def test_contiguous_unflatten_flatten_roundtrip(sizes):
    numel = 1
    for s in sizes:
        numel *= s
    assert simplify_index(flatten(unflatten(x, sizes), sizes), {x: numel}) == x


def test_transposed_access_keeps_its_meaning():
    n = 5
    i, j = unflatten(x, (n, n))
    expr = simplify_index(j * n + i, {x: n * n})
    for v in range(n * n):
        assert evaluate(expr, v) == (v % n) * n + v // n


@pytest.mark.parametrize("sizes,perm", [((7, 13, 3), (2, 0, 1)), ((4, 6), (1, 0))])
def test_permuted_index_matches_python(sizes, perm):
    numel = 1
    for s in sizes:
        numel *= s
    idx = unflatten(x, [sizes[p] for p in perm])
    src = [None] * len(sizes)
    for k, p in enumerate(perm):
        src[p] = idx[k]
    expr = simplify_index(flatten(src, sizes), {x: numel})
    strides = [1] * len(sizes)
    for d in range(len(sizes) - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    for v in range(numel):
        coords = []
        rem = v
        out_sizes = [sizes[p] for p in perm]
        for s in reversed(out_sizes):
            coords.append(rem % s)
            rem //= s
        coords = list(reversed(coords))
        want = sum(coords[k] * strides[p] for k, p in enumerate(perm))
        assert evaluate(expr, v) == want


def test_range_knowledge_drops_wraps():
    assert simplify_index(ModularIndexing(x, 1, 64), {x: 64}) == x
    assert simplify_index(FloorDiv(x, 64), {x: 64}) == 0


def test_exact_multiples_leave_floordiv_and_mod():
    y = sympy.Symbol("y", integer=True, nonnegative=True)
    assert FloorDiv(8 * y + x, 8) == y + FloorDiv(x, 8)
    assert ModularIndexing(16 * y + x, 1, 8) == ModularIndexing(x, 1, 8)


def test_all_small_values_agree_with_python():
    for d, s in itertools.product((1, 2, 3), (2, 5)):
        e = ModularIndexing(x, d, s)
        for v in range(20):
            assert evaluate(e, v) == (v // d) % s


s = sympy.Symbol("s27", integer=True, positive=True)  # a size symbol of Dynamo's


def _check_symbolic(expr, simplified, numel, sizes=(1, 2, 3, 5, 7)):
    """``simplified`` equals ``expr`` at every index below ``numel`` for each size."""
    for size in sizes:
        for v in range(int(numel.subs(s, size))):
            want = expr.subs({s: size, x: v}).doit()
            got = simplified.subs({s: size, x: v}).doit()
            assert int(got) == int(want), (size, v)


def test_a_view_of_a_view_over_a_symbolic_size_is_its_flat_index():
    """[2, s, 64] read through a [2*s, 64] view: the nested unflatten merges to x (it was
    a chain of int64 divisions by s, several times slower than the static kernel)."""
    inner = flatten(unflatten(x, (2 * s, 64)), (2 * s, 64))
    expr = flatten(unflatten(inner, (2, s, 64)), (2, s, 64))
    simplified = simplify_index(expr, {x: 128 * s})
    assert simplified == x
    _check_symbolic(expr, simplified, 128 * s)


def test_symbolic_coefficients_merge():
    r = sympy.Symbol("r", integer=True, nonnegative=True)
    flat = r + s * x  # rows of length s
    expr = flatten(unflatten(flat, (8, s, s)), (8, s, s))
    assert simplify_index(expr, {x: 8 * s, r: s}) == flat


def test_divisions_of_wraps_with_symbolic_sizes_keep_their_meaning():
    expr = FloorDiv(ModularIndexing(x, 1, 64 * s), 16)
    assert expr == ModularIndexing(x, 16, 4 * s)
    nested = ModularIndexing(ModularIndexing(x, 1, 64), 1, 16)
    assert nested == ModularIndexing(x, 1, 16)
    kept = ModularIndexing(ModularIndexing(x, 1, s), 1, 16)  # 16 need not divide s
    assert isinstance(kept.args[0], ModularIndexing)
    _check_symbolic(expr, ModularIndexing(x, 16, 4 * s), 64 * s * 2)
    _check_symbolic(kept, kept, 3 * s)
    for v in range(200):
        assert int(nested.subs(x, v)) == (v % 64) % 16
        for size in (3, 5, 16, 20):
            assert int(kept.subs({x: v, s: size})) == (v % size) % 16
