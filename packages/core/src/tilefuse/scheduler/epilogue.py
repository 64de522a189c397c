"""Recognise a pointwise node that can run as a GEMM template's epilogue.

The node's body is traced into an expression tree over ``acc`` (the template's
result read at the output element) and other tensors. The tree is accepted only
when it *is*, structurally, a chain of ``tilefuse.plugin.EPILOGUE_KINDS`` steps
applied to ``acc``: for every step the matcher builds that step's formula, as
``Epilogue.apply_reference`` defines it, around a candidate inner expression and
compares the whole formula with the tree, every op, constant and operand. The
comparison works on a canonical form that only rewrites what does not change the
value beyond rounding: products are flattened with their constants folded and
their factors compared as a multiset, ``a / c`` is ``a * (1 / c)``, ``-a`` is
``a * -1``, small integer powers are products, and ``add``/``maximum`` are
commutative. Constants must agree to a relative 1e-6.

Anything else is refused by raising ``NotAnEpilogue`` with a reason, which the
fusion pass records; the pointwise node then runs as an ordinary kernel. The
matcher never lets another exception out: an unexpected failure is a refusal too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy

from ..ir.index import (
    flatten,
    provably_equal,
    provably_equal_all,
    simplify_index,
    stride_of,
    unflatten_in_order,
)
from ..ir.nodes import (
    Layout,
    Pointwise,
    contiguous_strides,
    index_symbols,
)
from ..ir.ops import OP_NAMES, OPTIONAL_OPS, ops_handler
from ..plugin import EpilogueStep, dtype_name
from .nodes import SchedNode


class NotAnEpilogue(Exception):
    """The node cannot be a fused epilogue; the message says why."""


@dataclass
class Operand:
    """An extra tensor the epilogue reads, as a strided view of ``buffer``; ``shape``
    holds sympy expressions where the GEMM's sizes are symbolic."""

    buffer: str
    shape: tuple[Any, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: str = "float32"  # torch dtype name, as in plugin.TensorSpec
    device: str = "cpu"


@dataclass
class MatchedEpilogue:
    node: SchedNode
    steps: tuple[EpilogueStep, ...]
    operands: list[Operand]
    # The node's buffer seen in the GEMM's shape, when the node has another shape (a
    # reshape or permute of the GEMM result whose storage order is the GEMM's): what the
    # template writes. ``None``: the node's own layout.
    out_layout: Layout | None = None


# Bodies larger or deeper than this are no chain of known steps (the largest, gelu_tanh,
# repeats its input five times); refusing them early bounds the matcher's work.
_MAX_TREE_SIZE = 4096
_MAX_TREE_DEPTH = 96
_REL_TOL = 1e-6

# Canonical terms (nested tuples):
#   ("acc",)                        the template's result at the output element
#   ("load", name, index)           another tensor
#   ("const", value)                a Python float
#   ("prod", c, (f1, f2, ...))      c * f1 * f2 * ...; at least one factor, none a
#                                   constant or a product; never (1.0, (f,))
#   (op, *terms)                    any other op of tilefuse.ir.ops
_ACC = ("acc",)
_COMMUTATIVE = frozenset({"add", "maximum", "minimum"})


class _TreeBuilder:
    """An ops handler building nested tuples: ``(op, *args)``. Load indices are
    simplified over ``ranges`` (index symbol -> exclusive bound) where given."""

    def __init__(self, ranges: dict[sympy.Symbol, Any] | None = None) -> None:
        self.ranges = ranges

    def load(self, name: str, index: Any) -> tuple:
        if self.ranges:
            index = simplify_index(index, self.ranges)
        return ("load", name, index)

    def constant(self, value: Any, dtype: Any) -> tuple:
        try:
            return ("constant", float(value))
        except (TypeError, ValueError) as exc:
            raise NotAnEpilogue(f"a constant that is not a number ({value!r})") from exc

    def to_dtype(self, value: Any, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        # Math runs in float32 and the final store casts. A cast to a non-float type
        # (truncation, bool) changes values, so it is no step of any known epilogue; nor
        # is float64 math. A cast to a narrower float rounds: kept as a term, which only
        # the store's own cast may absorb (``_without_store_rounding``).
        if not getattr(dtype, "is_floating_point", False) or dtype_name(dtype) == "float64":
            raise NotAnEpilogue(f"a cast to {dtype}")
        if dtype.itemsize < 4:
            return ("round", value, dtype)
        return value

    def masked(self, *args: Any) -> tuple:
        raise NotAnEpilogue("masked loads")

    def indirect(self, *args: Any) -> tuple:
        raise NotAnEpilogue("gathered loads")

    def index_expr(self, *args: Any) -> tuple:
        raise NotAnEpilogue("index arithmetic")

    def __getattr__(self, name: str) -> Callable[..., tuple]:
        if name in OPTIONAL_OPS:  # random numbers are no epilogue step
            raise NotAnEpilogue(f"{name} is not an epilogue step")
        if name not in OP_NAMES:
            raise AttributeError(name)
        return lambda *args: (name, *args)


def _const(value: float) -> tuple:
    return ("const", float(value))


def _is_const(t: tuple, value: float | None = None) -> bool:
    if t[0] != "const":
        return False
    return value is None or math.isclose(t[1], value, rel_tol=_REL_TOL)


def _product(terms: list[tuple]) -> tuple:
    """The canonical product of canonical ``terms``."""
    c = 1.0
    factors: list[tuple] = []
    for t in terms:
        if t[0] == "const":
            c *= t[1]
        elif t[0] == "prod":
            c *= t[1]
            factors.extend(t[2])
        else:
            factors.append(t)
    if not factors:
        return _const(c)
    if c == 1.0 and len(factors) == 1:
        return factors[0]
    return ("prod", c, tuple(factors))


def _same(a: tuple, b: tuple) -> bool:
    """Structural equality of canonical terms, constants to a relative ``_REL_TOL``."""
    if a is b:
        return True
    if a[0] != b[0] or len(a) != len(b):
        return False
    op = a[0]
    if op == "acc":
        return True
    if op == "const":
        return math.isclose(a[1], b[1], rel_tol=_REL_TOL)
    if op == "load":
        return a[1] == b[1] and (a[2] == b[2] or sympy.expand(a[2] - b[2]) == 0)
    if op == "prod":
        return math.isclose(a[1], b[1], rel_tol=_REL_TOL) and _same_multiset(a[2], b[2])
    if op in _COMMUTATIVE and len(a) == 3:
        if _same(a[1], b[1]) and _same(a[2], b[2]):
            return True
        return _same(a[1], b[2]) and _same(a[2], b[1])
    return all(_same(x, y) for x, y in zip(a[1:], b[1:]))


def _same_multiset(xs: tuple, ys: tuple) -> bool:
    if len(xs) != len(ys):
        return False
    rest = list(ys)
    for x in xs:
        for j, y in enumerate(rest):
            if _same(x, y):
                del rest[j]
                break
        else:
            return False
    return True


def _uses_acc(t: tuple) -> bool:
    if t[0] == "acc":
        return True
    if t[0] in ("const", "load"):
        return False
    if t[0] == "prod":
        return any(_uses_acc(f) for f in t[2])
    return any(_uses_acc(a) for a in t[1:])


def _render(t: tuple) -> str:
    """``t`` as a short infix formula, for refusal reasons."""
    op = t[0]
    if op == "acc":
        return "acc"
    if op == "const":
        return f"{t[1]:g}"
    if op == "load":
        return str(t[1])
    if op == "prod":
        parts = ([] if t[1] == 1.0 else [f"{t[1]:g}"]) + [_render(f) for f in t[2]]
        return "(" + " * ".join(parts) + ")"
    if op == "add":
        return f"({_render(t[1])} + {_render(t[2])})"
    return f"{op}({', '.join(_render(a) for a in t[1:])})"


# The formula of each operand-free step around its input ``x``, as canonical terms; this
# mirrors ``plugin.Epilogue.apply_reference``, which defines what every template computes.
def _gelu_erf(x: tuple) -> tuple:
    inner = ("erf", _product([x, _const(1.0 / math.sqrt(2.0))]))
    return _product([x, _const(0.5), ("add", _const(1.0), inner)])


def _gelu_tanh(x: tuple) -> tuple:
    cube = _product([_const(0.044715), x, x, x])
    inner = ("tanh", _product([_const(math.sqrt(2.0 / math.pi)), ("add", x, cube)]))
    return _product([x, _const(0.5), ("add", _const(1.0), inner)])


_FORMULAS: dict[str, Callable[[tuple], tuple]] = {
    "relu": lambda x: ("maximum", x, _const(0.0)),
    "gelu_erf": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda x: _product([x, ("sigmoid", x)]),
    "sigmoid": lambda x: ("sigmoid", x),
    "tanh": lambda x: ("tanh", x),
}


def _one_plus(f: tuple, op: str) -> tuple | None:
    """``z`` when ``f`` is ``1 + op(z)`` (either order), else ``None``."""
    if f[0] != "add":
        return None
    for one, other in ((f[1], f[2]), (f[2], f[1])):
        if _is_const(one, 1.0) and other[0] == op:
            return other[1]
    return None


def _candidates(t: tuple) -> list[tuple[str, tuple, Any]]:
    """``(kind, x, extra)`` guesses for the last step of ``t`` and its input ``x``.

    A guess only proposes; ``_Matcher.steps`` accepts it after comparing the
    step's whole formula around ``x`` with ``t``. ``extra`` is the scalar of a
    ``mul_scalar`` or the operand term of an add.
    """
    op = t[0]
    out: list[tuple[str, tuple, Any]] = []
    if op == "add":
        for x, other in ((t[1], t[2]), (t[2], t[1])):
            if _uses_acc(x) and not _uses_acc(other):
                out.append(("add", x, other))
    elif op == "maximum":
        out += [("relu", t[1], None), ("relu", t[2], None)]
    elif op in ("sigmoid", "tanh"):
        out.append((op, t[1], None))
    elif op == "prod":
        for f in t[2]:
            if f[0] == "sigmoid":
                out.append(("silu", f[1], None))
            z = _one_plus(f, "erf")
            if z is not None:
                out.append(("gelu_erf", _product([z, _const(math.sqrt(2.0))]), None))
            z = _one_plus(f, "tanh")
            if z is not None:
                # tanh's argument is sqrt(2 / pi) * (x + 0.044715 * x**3): x is a side of a sum.
                factors = z[2] if z[0] == "prod" else (z,)
                sums = [g for g in factors if g[0] == "add"]
                out += [("gelu_tanh", g[i], None) for g in sums for i in (1, 2)]
        if t[1] != 1.0:
            out.append(("mul_scalar", _product([_const(1.0), *t[2]]), t[1]))
    return out


def _measure(tree: Any) -> tuple[int, int]:
    """(size as a tree, depth) of a tuple DAG, without walking shared parts twice."""
    memo: dict[int, tuple[int, int]] = {}

    def visit(t: Any, level: int) -> tuple[int, int]:
        if level > _MAX_TREE_DEPTH:
            raise NotAnEpilogue(f"its body is deeper than {_MAX_TREE_DEPTH} ops")
        if not isinstance(t, tuple) or not t or t[0] in ("load", "constant"):
            return 1, 1
        key = id(t)
        if key not in memo:
            size, depth = 1, 0
            for a in t[1:]:
                s, d = visit(a, level + 1)
                size, depth = size + s, max(depth, d)
            memo[key] = (size, depth + 1)
        return memo[key]

    return visit(tree, 0)


class _Matcher:
    def __init__(
        self, template: str, out_index: Any, vars_: list[sympy.Symbol], shape: tuple[int, ...]
    ):
        self.template = template
        self.out_index = out_index
        self.vars = vars_
        self.shape = shape
        self.operands: list[Operand] = []
        self._canon: dict[int, tuple] = {}

    def canonical(self, t: Any) -> tuple:
        """The canonical term of a traced tree (see the module docstring)."""
        if not isinstance(t, tuple) or not t:
            raise NotAnEpilogue(f"an op argument that is not a value ({t!r})")
        key = id(t)
        if key not in self._canon:
            self._canon[key] = self._canonical(t)
        return self._canon[key]

    def _canonical(self, t: tuple) -> tuple:
        op = t[0]
        if op == "load":
            if t[1] != self.template:
                return ("load", t[1], t[2])
            if not provably_equal(t[2], self.out_index):
                raise NotAnEpilogue("it reads the GEMM result at another element")
            return _ACC
        if op == "constant":
            return _const(t[1])
        args = [self.canonical(a) for a in t[1:]]
        if op == "mul":
            return _product(args)
        if op == "neg":
            return _product([args[0], _const(-1.0)])
        if op == "truediv" and _is_const(args[1]) and args[1][1] != 0.0:
            return _product([args[0], _const(1.0 / args[1][1])])
        if op == "pow" and _is_const(args[1]) and args[1][1] in (1.0, 2.0, 3.0, 4.0):
            return _product([args[0]] * int(args[1][1]))
        return (op, *args)

    def steps(self, t: tuple) -> list[tuple[str, Any]]:
        """``(kind, extra)`` steps turning ``acc`` into ``t``; raises ``NotAnEpilogue``."""
        if t[0] == "acc":
            return []
        deepest: NotAnEpilogue | None = None
        for kind, x, extra in _candidates(t):
            after: list[tuple[str, Any]] = []
            if kind == "add":
                expected = ("add", x, extra)
            elif kind == "mul_scalar":
                expected = _product([x, _const(extra)])
            else:
                expected = _FORMULAS[kind](x)
            if not _same(expected, t):
                # ``3 * silu(x)`` folds its 3 into silu's product: a product step
                # followed by a scale, when all factors but the constant agree.
                if not (
                    expected[0] == "prod" == t[0]
                    and expected[1] != 0.0
                    and _same_multiset(expected[2], t[2])
                ):
                    continue
                after = [("mul_scalar", t[1] / expected[1])]
            try:
                return self.steps(x) + [(kind, extra)] + after
            except NotAnEpilogue as exc:
                deepest = deepest or exc
        if deepest is not None:
            raise deepest
        raise NotAnEpilogue(f"no epilogue step computes {_short(_render(t))}")

    def materialise(self, steps: list[tuple[str, Any]]) -> list[EpilogueStep]:
        out = []
        for kind, extra in steps:
            if kind == "add":
                out.append(self.operand_step(extra))
            elif kind == "mul_scalar":
                out.append(EpilogueStep("mul_scalar", value=float(extra)))
            else:
                out.append(EpilogueStep(kind))
        return out

    def operand_step(self, t: tuple) -> EpilogueStep:
        if t[0] != "load":
            raise NotAnEpilogue(f"the added term {_short(_render(t))} is not a plain tensor read")
        name, index = t[1], t[2]
        strides = []
        for var in self.vars:
            s = stride_of(index, var)
            if s is None or not s.is_Integer:
                raise NotAnEpilogue(f"{name} is read with a non-affine index")
            strides.append(int(s))
        offset = index.subs({v: 0 for v in self.vars})
        if not offset.is_Integer:
            raise NotAnEpilogue(f"{name} is read with a non-affine index")
        if len(strides) < 2:
            raise NotAnEpilogue(f"the GEMM result has {len(strides)} dimensions, not 2 or 3")
        m_stride, n_stride = strides[-2], strides[-1]
        batch_zero = all(s == 0 for s in strides[:-2])
        k = len(self.operands)
        if m_stride == 0 and batch_zero:
            self.operands.append(Operand(name, (self.shape[-1],), (n_stride,), int(offset)))
            return EpilogueStep("add_bias_n", operand=k)
        if n_stride == 0 and batch_zero and len(self.shape) == 2:
            self.operands.append(Operand(name, (self.shape[-2], 1), (m_stride, 0), int(offset)))
            return EpilogueStep("add_bias_m", operand=k)
        self.operands.append(Operand(name, self.shape, tuple(strides), int(offset)))
        return EpilogueStep("add_matrix", operand=k)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def match_tree(
    tree: Any, template: str, out_index: Any, index_vars: list[sympy.Symbol], shape: tuple
) -> tuple[tuple[EpilogueStep, ...], list[Operand]]:
    """The steps and operands that compute ``tree`` from ``template``'s result.

    ``tree`` is a node body traced by ``_TreeBuilder``; ``out_index`` is where the
    template's result is read for the output element at ``index_vars``. Raises
    ``NotAnEpilogue`` (and nothing else) when ``tree`` is not exactly such a chain.
    """
    try:
        size, _ = _measure(tree)
        if size > _MAX_TREE_SIZE:
            raise NotAnEpilogue(f"its body has {size} ops, more than any known epilogue")
        matcher = _Matcher(template, out_index, index_vars, shape)
        term = matcher.canonical(tree)
        steps = matcher.materialise(matcher.steps(term))
    except NotAnEpilogue:
        raise
    except Exception as exc:  # a refusal, never a failed compile: see the module docstring
        raise _failed(exc) from exc
    return tuple(steps), matcher.operands


def match_epilogue(
    template: SchedNode, node: SchedNode, buffers: dict[str, Any] | None = None
) -> MatchedEpilogue:
    """The epilogue ``node`` computes from ``template``'s result.

    ``buffers`` maps names to ``Buffer`` objects, to record operand dtypes and
    devices. Raises ``NotAnEpilogue`` with the reason when ``node`` is not exactly
    a chain of known steps; never raises anything else.
    """
    try:
        return _match(template, node, buffers or {})
    except NotAnEpilogue:
        raise
    except Exception as exc:  # a refusal, never a failed compile: see the module docstring
        raise _failed(exc) from exc


def _failed(exc: Exception) -> NotAnEpilogue:
    return NotAnEpilogue(f"the epilogue matcher failed on it ({type(exc).__name__}: {exc})")


def _without_store_rounding(tree: Any, stored: Any) -> Any:
    """``tree`` without its roundings to ``stored``, the dtype the template stores in: a
    chain of bfloat16 ops computes in float32 and rounds once, at the store (the usual
    fused precision). A rounding to another dtype stays, and the matcher refuses it
    (``x.to(bfloat16).float()`` in a float32 chain: dropping it would change values)."""
    memo: dict[int, Any] = {}

    def strip(t: Any) -> Any:
        if not (isinstance(t, tuple) and t and isinstance(t[0], str)):
            return t
        if id(t) not in memo:
            if t[0] == "round" and t[2] == stored:
                memo[id(t)] = strip(t[1])
            else:
                memo[id(t)] = (t[0], *(strip(a) for a in t[1:]))
        return memo[id(t)]

    return strip(tree)


def _match(template: SchedNode, node: SchedNode, buffers: dict[str, Any]) -> MatchedEpilogue:
    data = node.buffer.data
    if not isinstance(data, Pointwise):
        raise NotAnEpilogue("not a pointwise node")
    shape = tuple(sympy.sympify(s) for s in template.buffer.layout.size)
    out_layout = None
    if provably_equal_all(data.ranges, shape):
        index_vars, at = node.index_vars, node.index_vars
    else:
        index_vars = index_symbols("g", len(shape))
        at = _gemm_order_index(node.buffer.layout, index_vars, shape)
        lay = node.buffer.layout
        out_layout = Layout(lay.device, lay.dtype, shape, contiguous_strides(shape), lay.offset)
    out_index = template.buffer.layout.index(index_vars)
    # Reshapes on the way read through // and %, which the GEMM's ranges undo.
    ranges = dict(zip(index_vars, shape, strict=True))
    with ops_handler(_TreeBuilder(ranges)):
        tree = _without_store_rounding(data.body(at), node.buffer.layout.dtype)
    steps, operands = match_tree(tree, template.name, out_index, index_vars, shape)
    if out_layout is not None and not steps:
        # Stored in the GEMM's own order, it holds the GEMM's elements: a view would do,
        # and a padded-row result is better copied by a kernel than by the extern's run.
        raise NotAnEpilogue("a plain copy in another shape")
    for op in operands:
        buf = buffers.get(op.buffer)
        if buf is not None:
            op.dtype = dtype_name(buf.dtype)
            op.device = str(buf.device)
    return MatchedEpilogue(node, steps, operands, out_layout)


def _dense_order(sizes: tuple, strides: tuple) -> list[int] | None:
    """The dims of more than one element, outermost first, when ``strides`` are exactly
    the gap-free strides of ``sizes`` walked in that order (proved for every value of
    the size symbols, so symbolic layouts qualify too); else ``None``. Innermost first,
    each next dim is the one whose stride equals the elements spanned so far: in a dense
    layout that dim is unique."""
    remaining = [d for d in range(len(sizes)) if sizes[d] != 1]
    spanned: Any = sympy.Integer(1)
    inner_first: list[int] = []
    while remaining:
        fits = [d for d in remaining if provably_equal(strides[d], spanned)]
        if len(fits) != 1:
            return None
        inner_first.append(fits[0])
        remaining.remove(fits[0])
        spanned = spanned * sizes[fits[0]]
    return inner_first[::-1]


def _gemm_order_index(layout: Layout, gemm_vars: list[sympy.Symbol], shape: tuple) -> list[Any]:
    """The index of the element a node of another shape (a view of the GEMM result: the
    (1, T, C) of a linear layer, q/k/v heads permuted out of a fused projection) stores at
    row-major position ``gemm_vars`` of the GEMM's ``shape``: the position decoded through
    the node's strides. Only for a dense layout of as many elements, whose storage order
    the template can then write as a row-major ``shape``; ``NotAnEpilogue`` otherwise (and
    when the body does not read the GEMM there, the matcher refuses). Sizes may be
    symbolic: every fact used is proved for all their values."""
    sizes, strides = layout.size, layout.stride
    if not provably_equal(sympy.Mul(*sizes), sympy.Mul(*shape)):
        raise NotAnEpilogue("its shape differs from the GEMM result's")
    order = _dense_order(sizes, strides)
    if order is None:
        raise NotAnEpilogue("its shape differs from the GEMM result's, and its layout is not dense")
    position = flatten(gemm_vars, shape)
    ranges = dict(zip(gemm_vars, shape, strict=True))
    return [simplify_index(i, ranges) for i in unflatten_in_order(position, sizes, order)]
