"""The swappable ``ops`` handler that IR bodies are written against.

An IR body is a Python function over index expressions that calls ``ops.load``,
``ops.add``, ``ops.where``... The same body is run under different handlers:
``DependencyTracer`` records which buffers it reads at which index, and each
backend's handler renders it into kernel source. ``OP_NAMES`` lists every op a
handler must implement; their meaning follows the torch op of the same name
(``to_dtype`` casts, ``index_expr`` turns an index expression into a value,
``masked(cond, body, other)`` evaluates ``body()`` only where ``cond`` holds,
``indirect(value, size)`` turns a loaded index into an index symbol, wrapping
negative values by ``size``). ``OPTIONAL_OPS`` are rendered only by backends that declare
their capability (``rand``: ``plugin.CAP_RANDOM``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

UNARY_OPS = (
    "neg", "abs", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "sigmoid", "erf", "floor", "ceil", "trunc", "round", "sign", "reciprocal",
    "logical_not", "bitwise_not", "isnan", "isinf", "signbit",
)  # fmt: skip
BINARY_OPS = (
    "add", "sub", "mul", "truediv", "floordiv", "remainder", "fmod", "pow", "maximum",
    "minimum", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
    "bitwise_and", "bitwise_or", "bitwise_xor", "atan2", "copysign",
)  # fmt: skip
OTHER_OPS = ("load", "where", "to_dtype", "constant", "index_expr", "masked", "indirect")
OP_NAMES = UNARY_OPS + BINARY_OPS + OTHER_OPS
OPTIONAL_OPS = ("rand",)


class _Proxy:
    """``ops.<name>(...)`` forwards to the innermost active handler."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if not _stack:
                raise RuntimeError("ops used outside a handler (use `with ops_handler(h):`)")
            return getattr(_stack[-1], name)(*args, **kwargs)

        call.__name__ = name
        return call


_stack: list[Any] = []
ops: Any = _Proxy()


@contextlib.contextmanager
def ops_handler(handler: Any) -> Iterator[Any]:
    """Make ``handler`` receive ``ops.*`` calls inside the ``with`` block."""
    _stack.append(handler)
    try:
        yield handler
    finally:
        _stack.pop()


class DependencyTracer:
    """Runs a body and records ``(buffer name, index)`` for every load.

    Every value is an opaque token; the tracer also counts ops and keeps their
    names and cast targets, which the lowering uses to decide when an inlined body has
    grown too large, is cheap to recompute, or is a copy.
    """

    def __init__(self) -> None:
        self.reads: list[tuple[str, Any]] = []
        self.op_count = 0
        self.indirect_count = 0
        self.casts: list[Any] = []  # the target dtype of each ``to_dtype``
        self.op_names: list[str] = []  # every op called but loads, in order

    def load(self, name: str, index: Any) -> str:
        self.reads.append((name, index))
        self.op_count += 1
        return "v"

    def masked(self, cond: Any, body: Callable[[], Any], other: Any) -> str:
        body()
        self.op_count += 1
        self.op_names.append("masked")
        return "v"

    def indirect(self, value: Any, size: Any) -> Any:
        import sympy

        self.op_count += 1
        self.op_names.append("indirect")
        self.indirect_count += 1
        return sympy.Symbol(f"indirect{self.indirect_count}", integer=True, nonnegative=True)

    def __getattr__(self, name: str) -> Callable[..., str]:
        if name not in OP_NAMES and name not in OPTIONAL_OPS:
            raise AttributeError(f"unknown op {name!r}")

        def op(*args: Any, **kwargs: Any) -> str:
            self.op_count += 1
            self.op_names.append(name)
            if name == "to_dtype":
                self.casts.append(args[1] if len(args) > 1 else kwargs.get("dtype"))
            return "v"

        return op


def trace_reads(body: Callable[..., Any], *indices: Any) -> DependencyTracer:
    """Run ``body(*indices)`` under a ``DependencyTracer`` and return it."""
    tracer = DependencyTracer()
    with ops_handler(tracer):
        body(*indices)
    return tracer
