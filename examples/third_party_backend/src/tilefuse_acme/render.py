"""Render one ``plugin.KernelSpec`` as a C++ function parallelised with OpenMP.

The writer is the ops handler: each member's ``compute()`` runs under
``plugin.ops_handler(writer)`` and every ``ops.*`` call appends C++ statements and returns a
``Value`` (the name of a C++ variable or a literal, with its torch dtype).

Loop shapes, one ``x`` iteration per OpenMP work item:
- ``pointwise`` and ``reduction``: ``for x`` over rows; inside, members in dependency order:
  ``PER_X`` ones once per row, each ``REDUCED`` one in its own ``for r`` loop, ``PER_XR`` ones
  that are stored in a ``for r`` loop of their own (unstored ones are recomputed where read);
- ``pointwise-2d``: ``for x`` / ``for r`` in 32×32 tiles, so that a transposing copy touches
  both its source and its destination a cache line at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sympy
import torch
from sympy.printing.str import StrPrinter

from tilefuse import plugin
from tilefuse.errors import Unsupported

from .cpp_ops import (
    C_TYPES,
    FROM_MEMORY,
    MEMORY_TYPES,
    ROUND,
    TO_MEMORY,
    converter,
    literal,
    render_op,
    result_dtype,
)
from .prelude import PRELUDE

TILE = 32  # pointwise-2d tile edge
PARALLEL_MIN = 1 << 15  # elements of work below which one thread is faster than a team


class Value(str):
    """A C++ expression (a variable name or a literal) holding a value of ``dtype``."""

    dtype: torch.dtype

    def __new__(cls, text: str, dtype: torch.dtype) -> Value:
        v = super().__new__(cls, text)
        v.dtype = dtype
        return v


class IndexPrinter(StrPrinter):
    """sympy index expressions as C++ ``int64_t`` arithmetic over ``x`` and ``r``."""

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return {plugin.X: "x", plugin.R: "r"}.get(expr, expr.name)

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return f"INT64_C({int(expr)})" if abs(int(expr)) >= 2**31 else str(int(expr))

    def _print_Rational(self, expr: Any) -> str:
        raise Unsupported(f"acme: a fractional index {expr}")

    def _wrap(self, expr: Any) -> str:
        return f"({self._print(expr)})"

    def _print_FloorDiv(self, expr: Any) -> str:
        return f"({self._wrap(expr.args[0])} / {self._wrap(expr.args[1])})"

    def _print_ModularIndexing(self, expr: Any) -> str:
        x, d, s = (self._wrap(a) for a in expr.args)
        return f"(({x} / {d}) % {s})"

    def _print_Pow(self, expr: Any) -> str:
        base, exp = expr.args
        if not (exp.is_Integer and int(exp) > 0):
            raise Unsupported(f"acme: index power {expr}")
        return "(" + " * ".join([self._wrap(base)] * int(exp)) + ")"

    def _print_Min(self, expr: Any) -> str:
        return self._fold(expr.args, "<")

    def _print_Max(self, expr: Any) -> str:
        return self._fold(expr.args, ">")

    def _fold(self, args: Any, op: str) -> str:
        out = self._wrap(args[0])
        for a in args[1:]:
            b = self._wrap(a)
            out = f"({out} {op} {b} ? {out} : {b})"
        return out


_printer = IndexPrinter()


def c_name(name: str) -> str:
    """``name`` made a C identifier."""
    ident = re.sub(r"\W", "_", name)
    return ident if not ident[:1].isdigit() else f"k_{ident}"


def _int(expr: Any, what: str) -> int:
    expr = sympy.sympify(expr)
    if not expr.is_Integer:
        raise Unsupported(f"acme: kernels need static sizes; {what} is {expr}")
    return int(expr)


class CppWriter:
    """Builds one kernel; ``render()`` returns ``(source, function name, buffer args)``."""

    def __init__(self, spec: plugin.KernelSpec) -> None:
        self.spec = spec
        self.fn_name = c_name(spec.name)
        self.xnumel = _int(spec.xnumel, "xnumel")
        self.rnumel = _int(spec.rnumel, "rnumel")
        self.levels = {m.name: m for m in spec.members}
        self.lines: list[str] = []
        self.indent = 1
        self.cse: list[dict[str, Value]] = [{}]
        self.values: list[dict[str, Value]] = [{}]
        self.params: dict[str, str] = {}  # buffer name -> C parameter name
        self.written: set[str] = set()
        self.counter = 0

    # -- emission ---------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def open(self, header: str) -> None:
        self.emit(header + " {")
        self.indent += 1
        self.cse.append({})
        self.values.append({})

    def close(self) -> None:
        self.cse.pop()
        self.values.pop()
        self.indent -= 1
        self.emit("}")

    def fresh(self, prefix: str = "t") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def var(self, expr: str, dtype: torch.dtype) -> Value:
        """A ``const`` variable holding ``expr``; the same text in scope is reused (CSE)."""
        for scope in reversed(self.cse):
            if expr in scope and scope[expr].dtype == dtype:
                return scope[expr]
        name = self.fresh()
        self.emit(f"const {C_TYPES[dtype]} {name} = {expr};")
        value = Value(name, dtype)
        self.cse[-1][expr] = value
        return value

    def param(self, buffer: str) -> str:
        if buffer not in self.params:
            self.params[buffer] = f"p{len(self.params)}"
        return self.params[buffer]

    def index(self, expr: Any) -> str:
        return _printer.doprint(self.spec.simplify(expr))

    # -- the ops handler ----------------------------------------------------------
    def load(self, name: str, index: Any) -> Value:
        if name in self.levels:
            return self.member_value(name)
        dtype = self.spec.buffers[name].dtype
        if dtype not in C_TYPES:
            raise Unsupported(f"acme: buffer {name} has dtype {dtype}")
        text = f"{self.param(name)}[{self.index(index)}]"
        if dtype in FROM_MEMORY:
            text = f"{FROM_MEMORY[dtype]}({text})"
        return self.var(text, dtype)

    def constant(self, value: Any, dtype: torch.dtype) -> Value:
        return Value(literal(value, dtype), dtype)

    def index_expr(self, expr: Any, dtype: torch.dtype) -> Value:
        return self.to_dtype(self.var(f"(int64_t)({self.index(expr)})", torch.int64), dtype)

    def to_dtype(self, value: Any, dtype: torch.dtype, *_: Any, **__: Any) -> Value:
        value = self.coerce(value, dtype)
        if value.dtype == dtype:
            return value
        if dtype not in C_TYPES:
            raise Unsupported(f"acme: conversion to {dtype}")
        return self.var(converter(value.dtype, dtype)(value), dtype)

    def where(self, cond: Any, a: Any, b: Any) -> Value:
        hint = getattr(a, "dtype", None) or getattr(b, "dtype", None) or torch.float32
        a, b = self.coerce(a, hint), self.coerce(b, hint)
        t = C_TYPES[a.dtype]
        return self.var(f"({cond} ? ({t})({a}) : ({t})({b}))", a.dtype)

    def masked(self, cond: Any, body: Callable[[], Any], other: Any) -> Value:
        """``body()`` evaluated only where ``cond`` holds (its loads may be out of bounds
        elsewhere), ``other`` where it does not."""
        name = self.fresh("m")
        at = len(self.lines)
        self.open(f"if ({cond})")
        value = self.coerce(body(), torch.float32)
        self.emit(f"{name} = {value};")
        self.close()
        decl = f"{C_TYPES[value.dtype]} {name} = {literal(other, value.dtype)};"
        self.lines.insert(at, "    " * self.indent + decl)
        return Value(name, value.dtype)

    def indirect(self, value: Any, size: Any) -> sympy.Symbol:
        size_text = _printer.doprint(sympy.sympify(size))
        v = self.var(f"((int64_t){value} < 0 ? (int64_t){value} + {size_text} : "
                     f"(int64_t){value})", torch.int64)  # fmt: skip
        return sympy.Symbol(str(v), integer=True)

    def coerce(self, value: Any, dtype: torch.dtype) -> Value:
        """A Python number (some bodies pass literals) as a ``Value`` of ``dtype``."""
        if isinstance(value, Value):
            return value
        if isinstance(value, bool):
            dtype = torch.bool
        return self.constant(value, dtype)

    def __getattr__(self, name: str) -> Callable[..., Value]:
        if name not in plugin.OP_NAMES:
            raise AttributeError(name)

        def op(*args: Any) -> Value:
            hint = next((a.dtype for a in args if isinstance(a, Value)), torch.float32)
            values = [self.coerce(a, hint) for a in args]
            dtypes = [v.dtype for v in values]
            text = render_op(name, list(values), dtypes)
            out = result_dtype(name, dtypes)
            if out in ROUND:
                text = f"{ROUND[out]}({text})"
            return self.var(text, out)

        return op

    # -- members ----------------------------------------------------------------
    def member_value(self, name: str) -> Value:
        for scope in reversed(self.values):
            if name in scope:
                return scope[name]
        if self.levels[name].level is not plugin.Level.PER_XR:
            raise AssertionError(f"acme: member {name} read before it is computed")
        return self.compute(self.levels[name])

    def compute(self, member: plugin.MemberSpec) -> Value:
        value = self.coerce(member.compute(), member.dtype)
        self.values[-1][member.name] = value
        return value

    def store(self, member: plugin.MemberSpec, value: Value) -> None:
        dtype = self.spec.buffers[member.name].dtype
        value = self.to_dtype(value, dtype)
        text = f"{TO_MEMORY[dtype]}({value})" if dtype in TO_MEMORY else str(value)
        self.written.add(member.name)
        self.emit(f"{self.param(member.name)}[{self.index(member.store_index)}] = {text};")

    def r_loop(self) -> None:
        self.open(f"for (int64_t r = 0; r < {self.rnumel}; ++r)")

    # -- reductions ---------------------------------------------------------------
    def reduce(self, member: plugin.MemberSpec) -> Value:
        kind = member.reduction_type
        src = member.src_dtype or member.dtype
        if kind in ("logsumexp", "softmax_sum"):
            return self.logsumexp(member, src, kind)
        acc = self.fresh("acc")
        t = C_TYPES[src]
        # float sums and products accumulate in double: closer to eager's pairwise sum
        wide = "double" if src.is_floating_point and kind in ("sum", "prod") else t
        if kind in ("sum", "prod", "any"):
            init = {"sum": "0", "prod": "1", "any": "false"}[kind]
            self.emit(f"{'bool' if kind == 'any' else wide} {acc} = {init};")
        elif kind in ("max", "min", "argmax", "argmin"):
            high = kind in ("max", "argmax")
            if src.is_floating_point:
                init = literal(float("-inf") if high else float("inf"), src)
            elif src == torch.bool:
                init = literal(not high, src)
            else:
                init = literal(torch.iinfo(src).min if high else torch.iinfo(src).max, src)
            self.emit(f"{t} {acc} = {init};")
            if kind.startswith("arg"):
                self.emit(f"int64_t {acc}_i = 0;")
        else:
            raise Unsupported(f"acme: reduction {kind!r}")
        self.r_loop()
        v = self.to_dtype(self.compute(member), src)
        if kind == "sum":
            self.emit(f"{acc} += {v};")
        elif kind == "prod":
            self.emit(f"{acc} *= {v};")
        elif kind == "any":
            self.emit(f"{acc} = {acc} || ({v} != 0);")
        elif kind in ("max", "min"):
            self.emit(f"{acc} = tf_{kind}imum<{t}>({acc}, {v});")
        else:  # first index on ties; NaN counts as the extreme, its first one wins
            better = ">" if kind == "argmax" else "<"
            self.emit(f"if (!({acc} != {acc}) && ({v} != {v} || {v} {better} {acc})) "
                      f"{{ {acc} = {v}; {acc}_i = r; }}")  # fmt: skip
        self.close()
        if kind.startswith("arg"):
            return Value(f"{acc}_i", torch.int64)
        if kind == "any":
            return Value(acc, torch.bool)
        return self.to_dtype(Value(acc, torch.float64 if wide == "double" else src), src)

    def logsumexp(self, member: plugin.MemberSpec, src: torch.dtype, kind: str) -> Value:
        """``max + log(sum(exp(v - max)))`` in two passes; ±inf and NaN maxima pass
        through. ``softmax_sum``: the sum alone, NaN where the max is not finite."""
        t, m, s = C_TYPES[src], self.fresh("lse_m"), self.fresh("lse_s")
        self.emit(f"{t} {m} = {literal(float('-inf'), src)};")
        self.r_loop()
        self.emit(f"{m} = tf_maximum<{t}>({m}, {self.to_dtype(self.compute(member), src)});")
        self.close()
        self.emit(f"double {s} = 0;")
        self.emit(f"const {t} {m}_safe = std::isinf({m}) ? {t}(0) : {m};")
        self.r_loop()
        self.emit(f"{s} += std::exp({self.to_dtype(self.compute(member), src)} - {m}_safe);")
        self.close()
        if kind == "softmax_sum":
            return self.var(f"std::isfinite({m}) ? ({t}){s} : {literal(float('nan'), src)}", src)
        return self.var(f"std::isinf({m}) ? {m} : ({t})({m} + std::log({s}))", src)

    # -- whole kernel ---------------------------------------------------------------
    def rows(self) -> None:
        work = self.xnumel * max(self.rnumel, 1)
        if work >= PARALLEL_MIN and self.xnumel > 1:
            self.emit("#pragma omp parallel for schedule(static)")
        self.open(f"for (int64_t x = 0; x < {self.xnumel}; ++x)")
        for m in self.spec.members:
            stored = m.name in self.spec.stores
            if m.level is plugin.Level.REDUCED:
                value = self.reduce(m)
                self.values[-1][m.name] = value
                if stored:
                    self.store(m, value)
            elif m.level is plugin.Level.PER_X:
                value = self.compute(m)
                if stored:
                    self.store(m, value)
            elif stored:  # PER_XR: recomputed wherever it is read, stored in its own loop
                self.r_loop()
                self.store(m, self.compute(m))
                self.close()
        self.close()

    def tiles(self) -> None:
        xn, rn = self.xnumel, self.rnumel
        if xn * rn >= PARALLEL_MIN:
            self.emit("#pragma omp parallel for collapse(2) schedule(static)")
        self.emit(f"for (int64_t xb = 0; xb < {xn}; xb += {TILE})")
        self.open(f"for (int64_t rb = 0; rb < {rn}; rb += {TILE})")
        self.emit(f"const int64_t xe = xb + {TILE} < {xn} ? xb + {TILE} : {xn};")
        self.emit(f"const int64_t re = rb + {TILE} < {rn} ? rb + {TILE} : {rn};")
        self.open("for (int64_t x = xb; x < xe; ++x)")
        self.open("for (int64_t r = rb; r < re; ++r)")
        for m in self.spec.members:
            value = self.compute(m)
            if m.name in self.spec.stores:
                self.store(m, value)
        self.close()
        self.close()
        self.close()

    def render(self) -> tuple[str, str, list[str]]:
        """``(C++ source, function name, buffer names in parameter order)``."""
        with plugin.ops_handler(self):
            if self.spec.kind is plugin.GroupKind.POINTWISE_2D:
                self.tiles()
            else:
                self.rows()
        params = []
        for buffer, p in self.params.items():
            dtype = self.spec.buffers[buffer].dtype
            const = "" if buffer in self.written else "const "
            params.append(f"{const}{MEMORY_TYPES.get(dtype, C_TYPES[dtype])}* {p}")
        head = (
            f"// tilefuse-acme kernel {self.spec.name}: {self.spec.describe()}\n{PRELUDE}\n"
            f'extern "C" void {self.fn_name}({", ".join(params)}) {{\n'
        )
        return head + "\n".join(self.lines) + "\n}\n", self.fn_name, list(self.params)


def render(spec: plugin.KernelSpec) -> tuple[str, str, list[str]]:
    """``spec`` as C++: ``(source, function name, buffer names in parameter order)``.

    Raises ``tilefuse.errors.Unsupported`` (the graph then runs eagerly, with one warning)
    for what this backend does not render: symbolic sizes, unknown dtypes, ops or
    reductions.
    """
    if spec.version != plugin.KERNEL_SPEC_VERSION:
        raise Unsupported(f"acme renders kernel specs of version {plugin.KERNEL_SPEC_VERSION}, "
                          f"not {spec.version}")  # fmt: skip
    return CppWriter(spec).render()
