"""Helpers shared by lowerings: dtypes, broadcasting, building lazy pointwise bodies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy
import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes

from ...ir.index import Expr
from ...ir.nodes import sympify_sizes
from ...ir.ops import ops
from ..lowering import Unsupported
from ..values import LazyValue, Value

HALF_TYPES = (torch.float16, torch.bfloat16)
DEFAULT_PROMOTION = ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision math is done in float32 and cast back on store."""
    return torch.float32 if dtype in HALF_TYPES else dtype


def out_meta(node: Any) -> torch.Tensor:
    meta = node.meta.get("val")
    if not isinstance(meta, torch.Tensor):
        raise Unsupported("no tensor example value")
    return meta


def out_sizes(node: Any) -> tuple[Expr, ...]:
    return sympify_sizes(out_meta(node).shape)


def size_value(n: Any, dtype: torch.dtype) -> Any:
    """The kernel value of ``n`` (a Python number or a size expression) as ``dtype``: a
    constant when it is one, else the symbolic size read as an index expression."""
    if isinstance(n, sympy.Expr):
        if n.is_Integer:
            return ops.constant(int(n), dtype)
        if dtype.is_floating_point:
            return ops.to_dtype(ops.index_expr(n, torch.int64), dtype)
        return ops.index_expr(n, dtype)
    return ops.constant(n, dtype)


def device_of(args: Sequence[Any], node: Any) -> torch.device:
    for a in args:
        if isinstance(a, Value):
            return a.device
    return out_meta(node).device


def _probes(args: Sequence[Any]) -> list[Any]:
    probes: list[Any] = []
    for a in args:
        if isinstance(a, Value):
            probes.append(torch.empty((1,) if a.rank else (), dtype=a.dtype))
        elif isinstance(a, (bool, int, float)):
            probes.append(a)
        elif isinstance(a, sympy.Expr):  # a size: an integer
            probes.append(2)
    return probes


def promoted_dtype(args: Sequence[Any]) -> torch.dtype:
    """torch's default type promotion over tensor values and python scalars."""
    probes = _probes(args)
    if not probes:
        return torch.get_default_dtype()
    _, result = elementwise_dtypes(*probes, type_promotion_kind=DEFAULT_PROMOTION)
    return result


def broadcast_index(value: Value, index: Sequence[Expr], out_size: Sequence[Expr]) -> list[Expr]:
    """The index into ``value`` for an output index under broadcasting."""
    rank = value.rank
    sub = list(index[len(index) - rank :]) if rank else []
    out_tail = list(out_size[len(out_size) - rank :]) if rank else []
    return [
        sympy.Integer(0) if (s == 1 and o != 1) else i for i, s, o in zip(sub, value.size, out_tail)
    ]


def loader(
    arg: Any, out_size: Sequence[Expr], dtype: torch.dtype
) -> Callable[[Sequence[Expr]], Any]:
    """Load ``arg`` (a Value or python scalar) broadcast to ``out_size``, cast to ``dtype``."""
    if isinstance(arg, Value):

        def load(index: Sequence[Expr]) -> Any:
            v = arg.load(broadcast_index(arg, index, out_size))
            return v if arg.dtype == dtype else ops.to_dtype(v, dtype)

        return load
    if isinstance(arg, (bool, int, float)):
        return lambda index: ops.constant(arg, dtype)
    if isinstance(arg, sympy.Expr):  # a size the graph computed
        return lambda index: size_value(arg, dtype)
    raise Unsupported(f"operand of type {type(arg).__name__}")


def pointwise(
    node: Any,
    args: Sequence[Any],
    body: Callable[..., Any],
    *,
    math_dtype: torch.dtype | None = None,
) -> LazyValue:
    """A lazy elementwise value: loads ``args`` as ``math_dtype``, applies ``body``.

    ``math_dtype`` defaults to the promoted input dtype upcast for half types;
    the result is cast to the node's output dtype.
    """
    meta = out_meta(node)
    size = sympify_sizes(meta.shape)
    if math_dtype is None:
        math_dtype = compute_dtype(promoted_dtype(args))
    loaders = [loader(a, size, math_dtype) for a in args]
    out_dtype = meta.dtype

    def fn(index: Sequence[Expr]) -> Any:
        return ops.to_dtype(body(*[ld(index) for ld in loaders]), out_dtype)

    return LazyValue(out_dtype, device_of(args, node), size, fn)
