"""Index algebra: sympy expressions over loop symbols, simplified with known ranges.

``ModularIndexing(x, d, s)`` means ``(x // d) % s`` for non-negative integers;
``FloorDiv(x, d)`` means ``x // d``. ``simplify_index`` merges the terms that
unflattening a contiguous index produces, so a view or reshape costs nothing:
``8 * ModularIndexing(x, 8, 8) + ModularIndexing(x, 1, 8) -> x`` when
``0 <= x < 64``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sympy

Expr = sympy.Expr
_SIZE_SYMBOL = re.compile(r"s\d+$")


def is_size_symbol(sym: Any) -> bool:
    """True for a size symbol of Dynamo's (``s0``, ``s27``...: a positive integer that an
    input's size gives; see ``ir.symbolic``)."""
    return isinstance(sym, sympy.Symbol) and bool(_SIZE_SYMBOL.match(sym.name))


def exact_quotient(a: Expr, b: Expr) -> Expr | None:
    """``a / b`` when it is a polynomial with integer coefficients (``b`` divides ``a``
    for every value of the size symbols), else ``None``."""
    a, b = sympy.sympify(a), sympy.sympify(b)
    if a.is_Integer and b.is_Integer:
        return sympy.Integer(int(a) // int(b)) if int(b) and int(a) % int(b) == 0 else None
    num, den = sympy.fraction(sympy.cancel(a / b))
    if den != 1:
        return None
    symbols = sorted(num.free_symbols, key=str)
    if not symbols:
        return num if num.is_Integer else None
    if not num.is_polynomial(*symbols):
        return None
    poly = sympy.Poly(num, *symbols)
    return num if all(c.is_Integer for c in poly.coeffs()) else None


def _nonnegative(expr: Expr) -> bool:
    """True when ``expr`` is provably >= 0. Kernels print ``//`` and ``%`` with C's
    truncating semantics, so a rewrite may only leave them a non-negative operand."""
    return expr.is_nonnegative is True


class FloorDiv(sympy.Function):
    """``x // d`` for non-negative integer ``x`` and positive integer ``d``."""

    is_integer = True
    nargs = 2

    def _eval_is_nonnegative(self):
        return self.args[0].is_nonnegative

    @classmethod
    def eval(cls, x, d):
        if d == 1:
            return x
        if d == 0:  # only in empty iteration spaces, which never run
            return sympy.Integer(0)
        if x == 0:
            return sympy.Integer(0)
        if x.is_Integer and d.is_Integer:
            return sympy.Integer(int(x) // int(d))
        if isinstance(x, FloorDiv):
            return FloorDiv(x.args[0], x.args[1] * d)
        if isinstance(x, ModularIndexing):
            # ((y // e) % s) // d = (y // (e*d)) % (s / d) when d divides s.
            y, e, size = x.args
            if (q := exact_quotient(size, d)) is not None:
                return ModularIndexing(y, e * d, q)
        # Pull out terms that are exact multiples of d: (a*d + b) // d = a + b // d.
        whole, rest = _split_multiples(x, d)
        if whole and not rest:
            return sympy.Add(*whole)
        if whole and _nonnegative(sympy.Add(*rest)):
            return sympy.Add(*whole) + FloorDiv(sympy.Add(*rest), d)
        return None


def _split_multiples(x: Expr, d: Expr) -> tuple[list[Expr], list[Expr]]:
    """``(quotients, rest)``: the terms of ``x`` that are exact multiples of ``d``
    (``_term_quotient``), divided by it, and the other terms."""
    whole: list[Expr] = []
    rest: list[Expr] = []
    for term in sympy.Add.make_args(x):
        q = _term_quotient(term, d)
        if q is None:
            rest.append(term)
        else:
            whole.append(q)
    return whole, rest


@functools.lru_cache(maxsize=16384)
def _term_quotient(term: Expr, d: Expr) -> Expr | None:
    """``term / d`` when ``d`` (a product of size symbols, say) divides the one term
    ``term`` for every value of its symbols: the quotient has an integer coefficient and no
    denominator (``s27*MI(x, 1, s27) / s27`` is ``MI(x, 1, s27)``); else ``None``.
    Memoized: index rewriting asks the same question many times over (``subs`` rebuilds
    every ``FloorDiv`` and ``ModularIndexing`` it passes)."""
    if d.is_Integer:
        coeff, _ = term.as_coeff_Mul()
        return term / d if coeff.is_Integer and int(coeff) % int(d) == 0 else None
    if not d.free_symbols <= term.free_symbols:
        return None
    monomial = _monomial_quotient(term, d)
    if monomial is not None:
        return monomial
    q = term / d
    # Every term: sympy spreads a rational factor over a sum (2*s0*(a + b) / (4*s0) is
    # a/2 + b/2), and ``fraction`` of such a sum reports no denominator.
    for part in sympy.Add.make_args(sympy.expand(q)):
        if sympy.fraction(part)[1] != 1 or not part.as_coeff_Mul()[0].is_Integer:
            return None
    return q


def _monomial_quotient(term: Expr, d: Expr) -> Expr | None:
    """``term / d`` by exponent counting, when ``d`` is an integer times a product of
    powers that ``term``'s own factors hold with an integer coefficient left over (no
    ``expand``: most quotients of an index are of this kind); ``None`` where that does
    not show it (a sum among the factors, say: ``_term_quotient`` then decides)."""
    t_coeff, t_rest = term.as_coeff_Mul()
    d_coeff, d_rest = d.as_coeff_Mul()
    if not (t_coeff.is_Integer and d_coeff.is_Integer) or int(t_coeff) % int(d_coeff):
        return None
    t_powers = t_rest.as_powers_dict()
    d_powers = d_rest.as_powers_dict()
    # only integer factors (symbols, FloorDiv...) to non-negative integer powers: a
    # quotient such as x*s1/s0 / s1 or s0*(x/2 + 1) / s0 is no integer term
    if not all(b.is_integer is True and e.is_Integer and e >= 0 for b, e in t_powers.items()):
        return None
    left: dict[Expr, Expr] = dict(t_powers)
    for base, exp in d_powers.items():
        have = t_powers.get(base)
        if have is None or not exp.is_Integer or have < exp:
            return None
        left[base] = have - exp
    coeff = sympy.Integer(int(t_coeff) // int(d_coeff))
    return coeff * sympy.Mul(*[b**e for b, e in left.items() if e != 0])


class ModularIndexing(sympy.Function):
    """``(x // d) % s`` for non-negative integer ``x``; positive ``d`` and ``s``."""

    is_integer = True
    is_nonnegative = True
    nargs = 3

    @classmethod
    def eval(cls, x, d, s):
        if s == 1 or s == 0 or d == 0 or x == 0:  # s, d == 0: empty spaces never run
            return sympy.Integer(0)
        if isinstance(x, ModularIndexing):
            # (((y // e) % t) // d) % s = (y // (e*d)) % s when d*s divides t.
            y, e, t = x.args
            if exact_quotient(t, d * s) is not None:
                return ModularIndexing(y, e * d, s)
        if x.is_Integer and d.is_Integer and s.is_Integer:
            return sympy.Integer((int(x) // int(d)) % int(s))
        # Drop terms that are multiples of d*s; they never change the result.
        dropped, kept = _split_multiples(x, d * s)
        if dropped and _nonnegative(sympy.Add(*kept)):
            return ModularIndexing(sympy.Add(*kept), d, s)
        return None


def unflatten(flat: Expr, sizes: Sequence[Expr]) -> list[Expr]:
    """The per-dimension indices of ``flat`` over a row-major shape ``sizes``."""
    out: list[Expr] = []
    divisor: Expr = sympy.Integer(1)
    for size in reversed(sizes):
        out.append(ModularIndexing(flat, divisor, size))
        divisor = divisor * size
    return list(reversed(out))


def unflatten_in_order(flat: Expr, sizes: Sequence[Expr], order: Sequence[int]) -> list[Expr]:
    """The per-dimension indices (logical order) of ``flat`` counted over the dims in
    ``order`` (outermost first), as in memory laid out in that order; a dim missing from
    ``order`` (a size-1 dim) is 0."""
    digits = unflatten(flat, [sizes[d] for d in order])
    by_dim = dict(zip(order, digits, strict=True))
    return [by_dim.get(d, sympy.Integer(0)) for d in range(len(sizes))]


def flatten(index: Sequence[Expr], sizes: Sequence[Expr]) -> Expr:
    """Row-major linear offset of ``index`` in a contiguous tensor of ``sizes``."""
    total: Expr = sympy.Integer(0)
    stride: Expr = sympy.Integer(1)
    for i, size in zip(reversed(index), reversed(sizes)):
        total = total + i * stride
        stride = stride * size
    return total


def _upper_bound(expr: Expr, ranges: Mapping[sympy.Symbol, Expr]) -> Expr | None:
    """An exclusive upper bound of a non-negative ``expr`` (``None`` when unknown)."""
    if expr.is_Integer:
        return expr + 1
    if isinstance(expr, sympy.Symbol):
        if expr in ranges:
            return ranges[expr]
        return expr + 1 if is_size_symbol(expr) else None  # a size is at most itself
    if isinstance(expr, ModularIndexing):
        return expr.args[2]
    if isinstance(expr, FloorDiv):
        inner = _upper_bound(expr.args[0], ranges)
        if inner is None:
            return None
        quotient = exact_quotient(inner, expr.args[1])  # x < q*d gives x // d < q
        return quotient if quotient is not None else FloorDiv(inner - 1, expr.args[1]) + 1
    if expr.is_Add:
        total = sympy.Integer(0)
        for term in expr.args:
            bound = _upper_bound(term, ranges)
            if bound is None:
                return None
            total = total + bound - 1
        return total + 1
    if expr.is_Mul:
        largest: Expr = sympy.Integer(1)  # of the product of non-negative factors
        for factor in expr.args:
            if factor.is_Integer:
                if factor < 0:
                    return None
                largest = largest * factor
                continue
            bound = _upper_bound(factor, ranges)
            if bound is None:
                return None
            largest = largest * (bound - 1)
        return largest + 1
    return None


def provably_within(expr: Expr, ranges: Mapping[sympy.Symbol, Expr], last: Expr) -> bool:
    """Whether ``0 <= expr <= last`` for every value of its symbols below their exclusive
    ``ranges`` (size symbols at any value). ``False`` means not shown: a negative term
    (a padded window's offset) or an unknown symbol (an indirect index) never is."""
    expr = sympy.expand(expr)
    if not _built_nonnegative(expr, ranges):
        return False
    bound = _upper_bound(expr, ranges)
    return bound is not None and _known_le(bound - 1, last)


def _built_nonnegative(expr: Expr, ranges: Mapping[sympy.Symbol, Expr]) -> bool:
    """Whether ``expr`` is built of non-negative parts only: integers >= 0, symbols of
    ``ranges`` or sizes, and sums, products, ``//`` and ``%`` of such. A negative part
    anywhere (``(x - 768) % 64``, a concatenation's shifted read, is negative in the
    kernel's truncating ``%`` at ``x < 768``) is not shown."""
    if expr.is_Integer:
        return bool(expr >= 0)
    if isinstance(expr, sympy.Symbol):
        return expr in ranges or is_size_symbol(expr)
    if isinstance(expr, (FloorDiv, ModularIndexing)) or expr.is_Add or expr.is_Mul:
        return all(_built_nonnegative(a, ranges) for a in expr.args)
    return False


def provably_equal(a: Any, b: Any) -> bool:
    """Whether two size or index expressions are equal for every value of their symbols,
    as far as ``expand`` shows (``FloorDiv``/``ModularIndexing`` are opaque atoms to it):
    ``False`` means not shown, never unequal. ``simplify`` would prove the same here at
    many times the cost (most of a symbolic graph's scheduling went on it)."""
    a, b = sympy.sympify(a), sympy.sympify(b)
    return a == b or sympy.expand(a - b) == 0


def provably_equal_all(a: Any, b: Any) -> bool:
    """``provably_equal`` element-wise over two size tuples of one length."""
    return len(a) == len(b) and all(provably_equal(x, y) for x, y in zip(a, b))


def _known_le(a: Expr, b: Expr) -> bool:
    """Whether ``a <= b`` is known; ``False`` when it cannot be shown. ``expand`` puts the
    polynomial sizes this compares in canonical form, at a fraction of ``simplify``'s cost
    (most of a symbolic graph's compile time went on ``simplify`` here)."""
    diff = sympy.expand(b - a)
    return bool(diff.is_Integer and diff >= 0) or bool(diff.is_nonnegative)


def _index_factor(term: Expr) -> tuple[Expr, Expr | None]:
    """``(coefficient, f)`` with ``term = coefficient * f`` for the one ``FloorDiv`` or
    ``ModularIndexing`` factor ``f`` of ``term`` (the coefficient may hold size symbols);
    ``(term, None)`` when there is not exactly one."""
    factors = sympy.Mul.make_args(term)
    found = [f for f in factors if isinstance(f, (ModularIndexing, FloorDiv))]
    if len(found) != 1:
        return term, None
    return sympy.Mul(*[f for f in factors if f is not found[0]]), found[0]


def _merge_terms(expr: Expr) -> Expr:
    """Merge ``k*MI(x,d,s1) + k*s1*MI(x,d*s1,s2)`` into ``k*MI(x,d,s1*s2)`` (and the
    ``FloorDiv`` form of the high term into ``k*FloorDiv(x,d)``) until nothing changes,
    in every sum of ``expr``, innermost first: the index of a view of a view nests the
    unflattened index of one inside the other's divisions. ``k``, ``d`` and ``s1`` may
    be products of size symbols (a symbolic shape unflattens by them)."""
    if not expr.args:
        return expr
    expr = expr.func(*[_merge_terms(a) for a in expr.args])
    if not expr.is_Add:
        return expr
    terms = list(expr.args)
    changed = True
    while changed:
        changed = False
        for i, low in enumerate(terms):
            lc, lm = _index_factor(low)
            if not isinstance(lm, ModularIndexing):
                continue
            x, d, s1 = lm.args
            for j, high in enumerate(terms):
                if i == j:
                    continue
                hc, hm = _index_factor(high)
                if not isinstance(hm, (ModularIndexing, FloorDiv)) or hm.args[0] != x:
                    continue
                if sympy.expand(hm.args[1] - d * s1) != 0:
                    continue
                if sympy.expand(hc - lc * s1) != 0:
                    continue
                if isinstance(hm, FloorDiv):  # a FloorDiv is a ModularIndexing without wrap
                    merged = lc * FloorDiv(x, d)
                else:
                    merged = lc * ModularIndexing(x, d, s1 * hm.args[2])
                terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [merged]
                changed = True
                break
            if changed:
                break
    return sympy.Add(*terms)


def _drop_redundant(expr: Expr, ranges: Mapping[sympy.Symbol, Expr]) -> Expr:
    """Use ranges: ``MI(x, d, s) -> x // d`` when ``x < d*s``; ``x // d -> 0`` when ``x < d``."""

    def peel(x: Expr, d: Expr) -> tuple[Expr, Expr] | None:
        """``(a, k)`` with ``x = k*a + b``, ``0 <= b < k`` and ``k | d``; else ``None``."""
        if not d.is_Integer:
            return peel_symbolic(x, d)
        terms = sympy.Add.make_args(x)
        coeffs = sorted({int(t.as_coeff_Mul()[0]) for t in terms if t.as_coeff_Mul()[0] > 1},
                        reverse=True)  # fmt: skip
        for k in coeffs:
            if int(d) % k:
                continue
            big = [t for t in terms if int(t.as_coeff_Mul()[0]) % k == 0]
            small = [t for t in terms if int(t.as_coeff_Mul()[0]) % k != 0]
            if small and not _nonnegative(sympy.Add(*small)):
                continue  # (2*i - 1) // 2 is not i: the remainder must be >= 0
            bound = _upper_bound(sympy.Add(*small), ranges) if small else sympy.Integer(1)
            if big and bound is not None and _known_le(bound, sympy.Integer(k)):
                return sympy.expand(sympy.Add(*big) / k), sympy.Integer(k)
        return None

    def peel_symbolic(x: Expr, d: Expr) -> tuple[Expr, Expr] | None:
        """``peel`` for a product of symbols ``d`` (``s27**2``, ``24*s27``): ``k`` is a
        product of ``d``'s factors, most factors first (``r + s27*x`` over ``s27**2``
        or ``2*s27**2`` peels ``x`` with ``k = s27`` when ``r < s27``; ``24*x + r`` over
        ``24*s27`` peels ``x`` with ``k = 24`` when ``r < 24``)."""
        terms = sympy.Add.make_args(x)
        for k in _divisor_products(d):
            if k == 1 or _term_quotient(d, k) is None:
                continue
            quotients = [_term_quotient(t, k) for t in terms]
            big = [q for q in quotients if q is not None]
            small = [t for t, q in zip(terms, quotients, strict=True) if q is None]
            if not big or (small and not _nonnegative(sympy.Add(*small))):
                continue
            bound = _upper_bound(sympy.Add(*small), ranges) if small else sympy.Integer(1)
            if bound is not None and _known_le(bound, k):
                return sympy.Add(*big), k
        return None

    def visit(e: Expr) -> Expr:
        if not e.args:
            return e
        e = e.func(*[visit(a) for a in e.args])
        if isinstance(e, FloorDiv) and (split := peel(e.args[0], e.args[1])) is not None:
            e = FloorDiv(split[0], e.args[1] / split[1])
        elif isinstance(e, ModularIndexing) and (split := peel(e.args[0], e.args[1])) is not None:
            e = ModularIndexing(split[0], e.args[1] / split[1], e.args[2])
        if isinstance(e, ModularIndexing):
            x, d, s = e.args
            bound = _upper_bound(x, ranges)
            if bound is not None and _known_le(bound, d * s):
                return FloorDiv(x, d)
        if isinstance(e, FloorDiv):
            x, d = e.args
            bound = _upper_bound(x, ranges)
            if bound is not None and _known_le(bound, d):
                return sympy.Integer(0)
        return e

    return visit(expr)


def _divisor_products(d: Expr) -> list[Expr]:
    """The products of ``d``'s factors (powers counted as repeated factors) other than 1,
    each distinct product once, most factors first: ``2*s**2`` gives ``2*s**2, s**2,
    2*s, s, 2``. Empty where a power is not a positive integer one."""
    powers = sympy.Mul(d).as_powers_dict()
    if not all(e.is_Integer and e > 0 for e in powers.values()):
        return []
    bases = list(powers)
    counts = [range(int(powers[b]) + 1) for b in bases]
    products: dict[Expr, int] = {}
    for picks in itertools.product(*counts):
        if any(picks):
            k = sympy.Mul(*[b**n for b, n in zip(bases, picks, strict=True)])
            products.setdefault(k, sum(picks))
    return sorted(products, key=lambda k: -products[k])


def simplify_index(expr: Expr, ranges: Mapping[sympy.Symbol, Expr]) -> Expr:
    """Simplify an index expression given exclusive upper bounds of its symbols."""
    expr = sympy.expand(expr)
    for _ in range(4):
        new = _drop_redundant(_merge_terms(expr), ranges)
        new = sympy.expand(new)
        if new == expr:
            break
        expr = new
    return expr


def stride_of(expr: Expr, symbol: sympy.Symbol) -> Expr | None:
    """The constant coefficient of ``symbol`` when ``expr`` is linear in it, else ``None``."""
    if symbol not in expr.free_symbols:
        return sympy.Integer(0)
    coeff = sympy.expand(expr).coeff(symbol)
    rest = sympy.expand(expr - coeff * symbol)
    if symbol in coeff.free_symbols or symbol in rest.free_symbols:
        return None
    return coeff
