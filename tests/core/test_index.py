"""Index algebra: the simplifications that make views free, checked numerically too."""

from __future__ import annotations

import itertools

import pytest
import sympy

from tilefuse.ir.index import (
    FloorDiv,
    ModularIndexing,
    flatten,
    provably_within,
    simplify_index,
    unflatten,
)

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


def test_rewrites_never_leave_a_negative_operand_for_truncating_division():
    """``(125 - x) % 125`` must not become ``(-x) % 125``, nor ``(125 - x) // 25`` become
    ``5 + (-x) // 25``: kernels truncate, so those read out of bounds (a flipped slice
    of a flattened tensor did: NaN gradients from memory before the input)."""
    for expr in (
        ModularIndexing(125 - x, 1, 125),
        FloorDiv(125 - x, 25),
        ModularIndexing(130 - x, 5, 5),
    ):
        for v in range(1, 125):
            want = expr.subs(x, v).doit()
            assert _value(expr, {x: v}) == int(want), (expr, v)  # // and % truncating


def test_range_drops_keep_a_negative_remainder():
    """``(2*i - 1) // 2`` is ``i - 1``, not ``i``: the peeled remainder ``-1`` is no
    ``0 <= b < 2`` (a padded strided slice read its neighbour's element)."""
    expr = FloorDiv(2 * x - 1, 2)
    simplified = simplify_index(expr, {x: 5})
    for v in range(1, 5):
        assert evaluate(simplified, v) == (2 * v - 1) // 2


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


def test_a_row_offset_over_a_product_of_several_symbolic_factors_peels():
    """GPT-2's causal mask read by a softmax's normalizing pass: ``(r + s*x) // (2*s**2)``
    with ``r < s`` is ``x // (2*s)``; the peel needs ``s`` out of ``2*s**2``, two factors
    less (the kernel computed it per element, in 64 bits, and loaded the mask twice)."""
    r = sympy.Symbol("r", integer=True, nonnegative=True)
    expr = FloorDiv(r + s * x, 2 * s**2)
    simplified = simplify_index(expr, {x: 4 * s, r: s})
    assert simplified == FloorDiv(x, 2 * s)
    for size in (2, 3, 5):
        for xv in range(4 * size):
            for rv in range(size):
                env = {s: size, x: xv, r: rv}
                assert int(simplified.subs(env)) == int(expr.subs(env)), env


def test_a_quotient_is_exact_only_with_integer_factors_left():
    """``x*s1/s0`` over ``s1`` leaves ``x/s0`` and ``s0*(x/2 + 1)`` over ``s0`` leaves
    ``x/2 + 1``: neither is an integer term, so neither is a multiple to pull out."""
    from tilefuse.ir.index import _term_quotient

    t = sympy.Symbol("s1", integer=True, positive=True)
    assert _term_quotient(x * t / s, t) is None
    assert _term_quotient(s * (x / 2 + 1), s) is None
    assert _term_quotient(s * (x + sympy.Rational(1, 2)), s) is None
    assert _term_quotient(6 * s * t * x, 3 * s) == 2 * t * x
    expr = FloorDiv(x * t / s + 1, t)
    assert not (isinstance(expr, sympy.Add) and any(a == x / s for a in expr.args)), expr


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


# ---- brute force: random index expressions over symbolic sizes keep their meaning -------

_S0 = sympy.Symbol("s0", integer=True, positive=True)
_S1 = sympy.Symbol("s1", integer=True, positive=True)
_R = sympy.Symbol("r", integer=True, nonnegative=True)
# divisors and moduli: constants, size symbols, products and non-monomial polynomials
_SIZES = [1, 2, 3, 4, 8, _S0, _S1, 2 * _S0, _S0 * _S1, _S0 + 1, (_S0 + 1) * _S1, 4 * _S0]
# flipped sizes: n - 1 is a multiple of common divisors, the case a fold must not drop
_FLIP_SIZES = [3, 5, 9, 17, _S0 + 1, 2 * _S0 + 1, 4 * _S0 + 1]


def _truncated_quotient(a, b):
    """``a / b`` rounded toward zero, as a kernel's ``//`` computes it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _value(expr, env):
    """``expr`` at ``env`` in plain integers, the way a kernel computes it: ``FloorDiv``
    and ``ModularIndexing`` print as ``//`` and ``%``, which truncate toward zero, so a
    rewrite that leaves them a negative operand shows here (a zero divisor or modulus
    gives 0, as in the empty spaces they mean)."""
    expr = sympy.sympify(expr)
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return env[expr]
    args = [_value(a, env) for a in expr.args]
    if isinstance(expr, FloorDiv):
        return _truncated_quotient(args[0], args[1]) if args[1] else 0
    if isinstance(expr, ModularIndexing):
        if not (args[1] and args[2]):
            return 0
        q = _truncated_quotient(args[0], args[1])
        return q - _truncated_quotient(q, args[2]) * args[2]
    if expr.is_Add:
        return sum(args)
    if expr.is_Mul:
        out = 1
        for a in args:
            out *= a
        return out
    if expr.is_Pow:
        return args[0] ** args[1]
    raise TypeError(f"no value for {expr!r}")


def _random_index(rng, depth):
    """``(expr, truth)``: an index expression built through the IR's constructors (so their
    folding rules apply) and a function computing its meaning without them."""
    if depth == 0 or rng.random() < 0.2:
        sym = rng.choice([x, x, _R])
        return sym, lambda env, sym=sym: env[sym]
    a, fa = _random_index(rng, depth - 1)
    size = rng.choice(_SIZES)
    kind = rng.random()
    if kind < 0.2:
        b, fb = _random_index(rng, depth - 1)
        return a + b, lambda env: fa(env) + fb(env)
    if kind < 0.35:
        return size * a, lambda env: _value(size, env) * fa(env)
    if kind < 0.5:
        return FloorDiv(a, size), lambda env: fa(env) // _value(size, env)
    if kind < 0.6:  # a flip: n - 1 - (a mod n), non-negative with a negative term
        n = rng.choice(_FLIP_SIZES)
        wrapped = ModularIndexing(a, 1, n)
        return n - 1 - wrapped, lambda env: _value(n, env) - 1 - fa(env) % _value(n, env)
    if kind < 0.75:
        mod = rng.choice(_SIZES)
        return ModularIndexing(
            a, size, mod
        ), lambda env: (fa(env) // _value(size, env)) % _value(mod, env)
    # a view: unflatten over sizes, then read with row-major or arbitrary strides
    sizes = [rng.choice(_SIZES) for _ in range(rng.randint(1, 3))]
    strides = [rng.choice([0, 1, 2, _S0, 5]) for _ in sizes]
    if rng.random() < 0.5:
        strides = [product_of(sizes[i + 1 :]) for i in range(len(sizes))]
    expr = sum((i * st for i, st in zip(unflatten(a, sizes), strides)), sympy.Integer(0))

    def truth(env):
        flat, total = fa(env), 0
        for size_, stride in zip(reversed(sizes), reversed(strides)):
            n = _value(size_, env)
            total += (flat % n) * _value(stride, env)
            flat //= n
        return total

    return expr, truth


def product_of(sizes):
    out = sympy.Integer(1)
    for s in sizes:
        out = out * s
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_index_expressions_keep_their_meaning(seed):
    """The folding rules (divisions and wraps of wraps) and ``simplify_index`` (merges with
    size-symbol coefficients, range-based drops) are identities for every non-negative
    index below its range and every positive size, 1 included."""
    import random

    rng = random.Random(seed)
    for _ in range(25):
        expr, truth = _random_index(rng, rng.randint(1, 4))
        x_range = rng.choice([1, 7, 64, _S0, 2 * _S0, _S0 * _S1, 8 * _S0])
        r_range = rng.choice([1, 3, _S0])
        simplified = simplify_index(expr, {x: x_range, _R: r_range})
        for s0, s1 in itertools.product((1, 2, 3, 6), (1, 2)):
            env = {_S0: s0, _S1: s1}
            for xv in range(min(_value(x_range, env), 24)):
                for rv in range(min(_value(r_range, env), 3)):
                    env.update({x: xv, _R: rv})
                    want = truth(env)
                    assert _value(expr, env) == want, (expr, env)
                    assert _value(simplified, env) == want, (expr, simplified, env)


def test_a_row_statistic_read_over_a_symbolic_row_is_the_row():
    """The softmax normalize of a symbolic-length row reads its row's statistic at
    ``s*((r + s*x) // s**2) + (r + s*(x % s)) // s``: that is ``x`` when ``r < s``, and
    stays as it is when ``r`` may reach ``s``."""
    s = sympy.Symbol("s27", integer=True, positive=True)
    read = s * FloorDiv(_R + s * x, s**2) + FloorDiv(_R + s * ModularIndexing(x, 1, s), s)
    assert simplify_index(read, {_R: s, x: 8 * s}) == x
    assert simplify_index(read, {_R: s + 1, x: 8 * s}) != x


def test_a_rational_factor_spread_over_a_sum_is_no_exact_multiple():
    """``2*s0*(a + b)`` over ``4*s0`` is ``(a + b)/2``, which sympy writes ``a/2 + b/2``:
    not a multiple of the divisor, so nothing is pulled out of the division."""
    a = _S0 * ModularIndexing(x, 1, 2) + ModularIndexing(x, 2 * _S0, 4)
    div = FloorDiv(2 * _S0 * a, 4 * _S0)
    assert isinstance(div, FloorDiv), div
    assert _value(div, {_S0: 1, x: 1}) == 0  # (2 * (1 + 0)) // 4


def test_provably_within_checks_every_value_and_refuses_what_it_cannot_show():
    n = sympy.Symbol("s0", integer=True, positive=True)
    cases = [
        (ModularIndexing(x, 1, 64), {x: 1000}, 63, True),
        (ModularIndexing(x, 1, 64), {x: 1000}, 62, False),
        (64 * FloorDiv(x, 64) + 3, {x: 640}, 579, True),
        (64 * FloorDiv(x, 64) + 3, {x: 641}, 579, False),
        (x - 1, {x: 10}, 100, False),  # a padded window's offset: negative at x = 0
        (ModularIndexing(x - 5, 1, 64), {x: 1024}, 63, False),  # truncating % at x < 5
        (FloorDiv(x - 5, 3), {x: 20}, 100, False),
        (x * n, {x: 4}, 3 * n, True),
        (x * sympy.Symbol("tmp3", integer=True), {x: 4}, 100, False),  # indirect
    ]
    for expr, ranges, last, expected in cases:
        assert provably_within(expr, ranges, last) is expected, (expr, ranges, last)
        if expected and not expr.has(n):  # and it is true of every value
            assert all(0 <= evaluate(expr, v) <= last for v in range(int(ranges[x])))
