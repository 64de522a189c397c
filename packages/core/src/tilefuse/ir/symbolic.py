"""Symbolic sizes: torch's ``SymInt`` values as IR sympy expressions, their size hints,
and their text as Python code.

A graph that ``torch.compile`` traced with dynamic shapes has sizes such as ``s0`` or
``2*s1`` (sympy expressions over positive integer symbols that Dynamo created from the
input tensors' sizes). ``size_expr`` turns one into the IR's expression language without
asking torch for its value (asking would add a shape guard, i.e. specialize), and raises
``SymbolicUnsupported`` for what the IR does not express: unbacked sizes (from
``.item()`` or ``nonzero``), float or boolean symbols, ``Max``/``Min``/``Mod``... Dynamo
specializes sizes 0 and 1, so every size symbol stands for an integer ``>= 2``
(``MIN_SIZE``); ``known_nonnegative`` proves facts under that assumption.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sympy
from sympy.printing.str import StrPrinter

from ..errors import SymbolicUnsupported
from .index import Expr, FloorDiv, ModularIndexing, is_size_symbol

#: Dynamo specializes sizes 0 and 1, so a size symbol is at least this.
MIN_SIZE = 2


def _from_torch(expr: Any, sizes_only: bool = False) -> Expr:
    if isinstance(expr, sympy.Integer):
        return expr
    if isinstance(expr, sympy.Symbol):
        if not is_size_symbol(expr):
            raise SymbolicUnsupported(
                f"size {expr} is not a size of an input (an unbacked or derived symbol, "
                "e.g. from .item() or nonzero())"
            )
        return expr
    if expr.is_Add:
        return sympy.Add(*[_from_torch(a, sizes_only) for a in expr.args])
    if expr.is_Mul:
        return sympy.Mul(*[_from_torch(a, sizes_only) for a in expr.args])
    name = type(expr).__name__
    if (expr.is_Pow or name == "PowByNatural") and expr.args[1].is_Integer and expr.args[1] > 0:
        return _from_torch(expr.args[0], sizes_only) ** expr.args[1]
    if name in ("FloorDiv", "CleanDiv"):
        return FloorDiv(
            _from_torch(expr.args[0], sizes_only), _from_torch(expr.args[1], sizes_only)
        )
    if name == "ModularIndexing":
        return ModularIndexing(*[_from_torch(a, sizes_only) for a in expr.args])
    if name == "Max" and sizes_only:
        # max(1, s0*s1): how torch writes a contiguous stride; the sizes decide it. Only
        # where every symbol is a size (>= 2): an int argument under dynamic=True is a
        # symbol of any sign (max(n, 1) is no n).
        args = [_from_torch(a, sizes_only) for a in expr.args]
        for a in args:
            if all(known_nonnegative(a - b) for b in args):
                return a
    raise SymbolicUnsupported(f"size expression {expr} uses {name}, which the IR does not express")


def _sizes_only(node: Any) -> bool:
    """True when every symbol of ``node``'s expression is at least ``MIN_SIZE`` by its
    ShapeEnv's value ranges (sizes are; an int argument's symbol need not be)."""
    ranges = getattr(getattr(node, "shape_env", None), "var_to_range", None)
    if ranges is None:
        return False
    for sym in node.expr.free_symbols:
        lower = getattr(ranges.get(sym), "lower", None)
        try:
            if lower is None or not bool(lower >= MIN_SIZE):  # -oo for an int argument
                return False
        except (TypeError, ValueError, ArithmeticError):
            return False
    return True


def size_expr(value: Any, stride: bool = False) -> Expr:
    """``value`` (an int, a ``torch.SymInt`` or a sympy expression) as an IR expression.

    Never evaluates a ``SymInt`` (that would add a guard); raises ``SymbolicUnsupported``
    for a size the IR cannot express (see the module docstring). ``stride``: ``value`` is
    a tensor's stride, where torch's ``max(1, e)`` is ``e`` unless the tensor is empty
    (``e`` is a product of the inner sizes; a 0 or 1 int argument is specialized).
    """
    if isinstance(value, sympy.Expr):
        return value
    if isinstance(value, bool):
        raise SymbolicUnsupported(f"a boolean {value!r} where a size was expected")
    if isinstance(value, int):
        return sympy.Integer(value)
    node = getattr(value, "node", None)
    if node is not None and hasattr(node, "expr"):
        if type(value).__name__ != "SymInt":
            raise SymbolicUnsupported(f"a symbolic {type(value).__name__} ({node.expr})")
        if node.is_nested_int() if hasattr(node, "is_nested_int") else False:
            raise SymbolicUnsupported("a nested-tensor size")
        expr = node.expr
        if stride and type(expr).__name__ == "Max" and len(expr.args) == 2 and 1 in expr.args:
            expr = next(a for a in expr.args if a != 1)
        return _from_torch(expr, _sizes_only(node))
    return sympy.Integer(int(value))


def is_symbolic_value(value: Any) -> bool:
    """True for a ``torch.SymInt``/``SymFloat``/``SymBool`` that is not a constant."""
    node = getattr(value, "node", None)
    return (
        node is not None
        and hasattr(node, "expr")
        and not getattr(node, "is_constant", lambda: False)()
    )


def size_hints(inputs: Iterable[Any]) -> dict[sympy.Symbol, int]:
    """The hint (the example value) of every size symbol in ``inputs`` (tensors, SymInts,
    anything else ignored), read from Dynamo's shape environment."""
    import torch

    hints: dict[sympy.Symbol, int] = {}
    for v in inputs:
        sizes: list[Any] = []
        if isinstance(v, torch.Tensor):
            sizes = [*v.shape, *v.stride(), v.storage_offset()]
        elif isinstance(v, torch.SymInt):
            sizes = [v]
        for s in sizes:
            node = getattr(s, "node", None)
            if node is None:
                continue
            env = node.shape_env
            values: Mapping[Any, Any] = getattr(env, "backed_var_to_val", None) or {}
            if not values:  # torch before 2.13 (or a shape environment with no sizes)
                values = env.var_to_val
            for sym in node.expr.free_symbols:
                if sym not in hints and sym in values:
                    hints[sym] = int(values[sym])
    return hints


def hint_of(expr: Any, hints: Mapping[sympy.Symbol, int]) -> int:
    """``expr`` evaluated at the size hints; ``SymbolicUnsupported`` for an unknown symbol."""
    expr = sympy.sympify(expr)
    if expr.is_Integer:
        return int(expr)
    missing = [s for s in expr.free_symbols if s not in hints]
    if missing:
        raise SymbolicUnsupported(f"no size hint for {', '.join(sorted(map(str, missing)))}")
    return int(expr.subs({s: hints[s] for s in expr.free_symbols}))


def _without_floor_divisions(expr: Expr) -> Expr | None:
    """``expr`` with each ``FloorDiv(a, d)`` replaced by the bound of it that makes the
    result smaller: ``(a - d + 1) / d`` where it is added, ``a / d`` where subtracted. The
    result is a lower bound of ``expr`` (``None`` where a division is not a term of it)."""
    divisions = expr.atoms(FloorDiv)
    bounds = {}
    for f in divisions:
        coeff = expr.coeff(f)
        a, d = f.args
        linear = coeff.is_number and coeff != 0 and not (expr - coeff * f).has(f)
        if not linear or (d.is_number and d <= 0):
            return None
        bounds[f] = (a - d + 1) / d if coeff > 0 else a / d
    out = sympy.expand(expr.subs(bounds)) if bounds else expr
    return None if out.atoms(FloorDiv) else out


def known_nonnegative(expr: Any) -> bool:
    """True when ``expr >= 0`` for every value of its size symbols (each ``>= MIN_SIZE``)."""
    expr = sympy.sympify(expr)
    if expr.is_Integer:
        return bool(expr >= 0)
    expr = _without_floor_divisions(sympy.expand(expr))
    if expr is None:
        return False
    shifted = {
        s: sympy.Symbol(f"_t_{s.name}", integer=True, nonnegative=True) + MIN_SIZE
        for s in expr.free_symbols
        if is_size_symbol(s)
    }
    return bool(sympy.expand(expr.subs(shifted)).is_nonnegative)


class PythonPrinter(StrPrinter):
    """IR index and size expressions as Python integer arithmetic over the symbols' names
    (``//`` for ``FloorDiv``, ``%`` for ``ModularIndexing``); backends subclass it
    (``plugin.IntegerExprPrinter``) to name their own symbols."""

    def _operand(self, expr: Any) -> str:
        text = self._print(expr)
        return text if (expr.is_Symbol or expr.is_Integer) else f"({text})"

    def _print_FloorDiv(self, expr: Any) -> str:
        x, d = expr.args
        return f"({self._operand(x)} // {self._operand(d)})"

    def _print_ModularIndexing(self, expr: Any) -> str:
        x, d, s = expr.args
        inner = self._operand(x) if d == 1 else f"({self._operand(x)} // {self._operand(d)})"
        return f"({inner} % {self._operand(s)})"

    def _print_Function(self, expr: Any) -> str:
        """Any other function (sympy's ``Mod``, ``floor``...) has no integer spelling
        here: refuse at compile time rather than emit a name the kernel cannot run."""
        raise SymbolicUnsupported(f"the index or size {expr} uses {type(expr).__name__}")

    _print_MinMaxBase = _print_Function
    _print_Piecewise = _print_Function


_python = PythonPrinter()


def python_expr(expr: Any) -> str:
    """``expr`` as Python source text (integer arithmetic; ``//`` for ``FloorDiv``).
    ``SymbolicUnsupported`` for a fraction, which integer arithmetic cannot express."""
    expr = sympy.sympify(expr)
    if any(not r.is_Integer for r in expr.atoms(sympy.Rational)):
        raise SymbolicUnsupported(f"a fraction in the size expression {expr}")
    return _python.doprint(expr)


def size_function(exprs: Sequence[Any], symbols: Sequence[str]) -> Callable[..., tuple[int, ...]]:
    """A function of the named symbols' values returning every ``exprs`` value as an int:
    how a kernel computes its extents at launch time from the sizes it is passed."""
    body = ", ".join(python_expr(e) for e in exprs)
    source = f"lambda {', '.join(symbols)}: ({body}{',' if len(exprs) == 1 else ''})"
    return eval(source, {})  # noqa: S307 (text printed from IR expressions, no user input)


def free_size_symbols(exprs: Iterable[Any]) -> set[sympy.Symbol]:
    """The size symbols the expressions use."""
    out: set[sympy.Symbol] = set()
    for e in exprs:
        out.update(s for s in sympy.sympify(e).free_symbols if is_size_symbol(s))
    return out
