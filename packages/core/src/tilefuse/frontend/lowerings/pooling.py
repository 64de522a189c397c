"""2-D pooling as pointwise bodies over the output: each output element reads its window
(unrolled, at most ``MAX_WINDOW`` taps), so pooling fuses with what produces its input
and what consumes its output, and keeps the input's channels-last layout.

``max_pool2d_with_indices`` follows eager's rule: a tap replaces the running maximum when
it is greater or NaN, so NaN wins and the index is the flat ``h * W + w`` position of
the last NaN, or of the first maximum. Out-of-bounds taps never count; where every
in-bounds tap is ``-inf`` the index is the first in-bounds tap's, as in eager.
``max_pool2d_with_indices_backward`` gathers: each input element sums the gradients of
the few windows that may cover it (``_covering``) whose saved index is its own position.
``avg_pool2d`` divides by ``divisor_override``, else by the taps inside the padded input
(``count_include_pad``) or inside the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy
import torch

from ...ir.index import FloorDiv
from ...ir.ops import ops
from ..lowering import Unsupported, register
from ..values import LazyValue, Value
from .common import compute_dtype

aten = torch.ops.aten

#: Larger windows stay eager calls: an unrolled body grows with the window (and a
#: gradient's with the windows that may cover one element).
MAX_WINDOW = 64


def _pair(value: Any, default: Sequence[int] | None = None) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = list(value)
    if not value:
        if default is None:
            raise Unsupported("empty pooling parameter")
        return (int(default[0]), int(default[1]))
    return (int(value[0]), int(value[0])) if len(value) == 1 else (int(value[0]), int(value[1]))


def _window(x: Value, kernel_size: Any, stride: Any, padding: Any, dilation: Any = 1) -> Any:
    if x.rank not in (3, 4) or not x.dtype.is_floating_point:
        raise Unsupported(f"pooling of a {x.rank}-D {x.dtype} tensor")
    k = _pair(kernel_size)
    s = _pair(stride, default=k)
    p = _pair(padding)
    d = _pair(dilation)
    if k[0] * k[1] > MAX_WINDOW:
        raise Unsupported(f"a {k[0]}x{k[1]} window (more than {MAX_WINDOW} taps)")
    return k, s, p, d


def _taps(idx: Sequence[Any], k, s, p, d):
    """``(ih, iw)`` index expressions of each tap of the window at output ``idx``."""
    oh, ow = idx[-2], idx[-1]
    for i in range(k[0]):
        for j in range(k[1]):
            yield oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]


def _below(expr: Any, bound: int) -> Any:
    return ops.lt(ops.index_expr(expr, torch.int64), ops.constant(bound, torch.int64))


def _inside(expr: Any, size: int) -> Any:
    return ops.logical_and(
        ops.ge(ops.index_expr(expr, torch.int64), ops.constant(0, torch.int64)),
        _below(expr, size),
    )


@register(aten.max_pool2d_with_indices)
def _max_pool2d_with_indices(
    ctx, node, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False
):
    k, s, p, d = _window(x, kernel_size, stride, padding, dilation)
    size = _sizes(node, 0)
    height, width = int(x.size[-2]), int(x.size[-1])
    math = compute_dtype(x.dtype)

    def window_max(idx: Sequence[Any]) -> tuple[Any, Any]:
        lead = list(idx[:-2])
        best = ops.constant(float("-inf"), math)
        where_ = ops.constant(0, torch.int64)
        seen = ops.constant(False, torch.bool)
        for ih, iw in _taps(idx, k, s, p, d):
            inside = ops.logical_and(_inside(ih, height), _inside(iw, width))
            v = ops.masked(inside, lambda ih=ih, iw=iw: _load(x, [*lead, ih, iw], math), 0.0)
            better = ops.logical_or(ops.gt(v, best), ops.isnan(v))
            take = ops.logical_and(inside, ops.logical_or(ops.logical_not(seen), better))
            best = ops.where(take, v, best)
            where_ = ops.where(take, ops.index_expr(ih * width + iw, torch.int64), where_)
            seen = ops.logical_or(seen, inside)
        return best, where_

    values = LazyValue(
        x.dtype, x.device, size, lambda idx: ops.to_dtype(window_max(idx)[0], x.dtype)
    )
    indices = LazyValue(torch.int64, x.device, size, lambda idx: window_max(idx)[1])
    return values, indices


def _covering(position: Any, k: int, s: int, p: int, d: int) -> list[Any]:
    """Output positions along one dim whose window may cover input ``position``: the
    windows ``o`` with ``o*s - p <= position <= o*s - p + (k-1)*d``, the last of which is
    ``(position + p) // s``. Some may lie outside the output (callers mask them)."""
    last = FloorDiv(position + p, s)
    return [last - t for t in range((k - 1) * d // s + 1)]


@register(aten.max_pool2d_with_indices_backward)
def _max_pool2d_with_indices_backward(
    ctx, node, grad, x, kernel_size, stride, padding, dilation, ceil_mode, indices
):
    k, s, p, d = _window(x, kernel_size, stride, padding, dilation)
    if grad.rank != x.rank or indices.rank != x.rank:
        raise Unsupported("pooling gradient and input ranks differ")
    size = _sizes(node, None)
    out_h, out_w = int(grad.size[-2]), int(grad.size[-1])
    width = int(x.size[-1])
    math = compute_dtype(x.dtype)
    rows, cols = ((k[i] - 1) * d[i] // s[i] + 1 for i in (0, 1))
    if rows * cols > MAX_WINDOW:  # a dilated window, stride 1: many candidate windows
        raise Unsupported(f"{rows}x{cols} windows may cover an element (over {MAX_WINDOW})")

    def fn(idx: Sequence[Any]) -> Any:
        lead = list(idx[:-2])
        ih, iw = idx[-2], idx[-1]
        here = ops.index_expr(ih * width + iw, torch.int64)
        total = ops.constant(0.0, math)
        for oh in _covering(ih, k[0], s[0], p[0], d[0]):
            for ow in _covering(iw, k[1], s[1], p[1], d[1]):
                window = [*lead, oh, ow]
                inside = ops.logical_and(_inside(oh, out_h), _inside(ow, out_w))
                # -1 (outside the output) is no input position
                saved = ops.masked(inside, lambda w=window: indices.load(w), -1)
                chosen = ops.eq(saved, here)
                g = ops.masked(chosen, lambda w=window: _load(grad, w, math), 0.0)
                total = ops.add(total, g)
        return ops.to_dtype(total, x.dtype)

    return LazyValue(x.dtype, x.device, size, fn)


@register(aten.avg_pool2d)
def _avg_pool2d(
    ctx,
    node,
    x,
    kernel_size,
    stride=(),
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    k, s, p, d = _window(x, kernel_size, stride, padding)
    size = _sizes(node, None)
    height, width = int(x.size[-2]), int(x.size[-1])
    math = compute_dtype(x.dtype)

    def fn(idx: Sequence[Any]) -> Any:
        lead = list(idx[:-2])
        total = ops.constant(0.0, math)
        count = ops.constant(0.0, math)
        for ih, iw in _taps(idx, k, s, p, d):
            inside = ops.logical_and(_inside(ih, height), _inside(iw, width))
            v = ops.masked(inside, lambda ih=ih, iw=iw: _load(x, [*lead, ih, iw], math), 0.0)
            total = ops.add(total, v)
            if divisor_override is None:
                counted = inside
                if count_include_pad:
                    counted = ops.logical_and(_below(ih, height + p[0]), _below(iw, width + p[1]))
                count = ops.add(count, ops.to_dtype(counted, math))
        if divisor_override is not None:
            count = ops.constant(float(divisor_override), math)
        return ops.to_dtype(ops.truediv(total, count), x.dtype)

    return LazyValue(x.dtype, x.device, size, fn)


def _load(x: Value, index: Sequence[Any], math: torch.dtype) -> Any:
    v = x.load(index)
    return v if x.dtype == math else ops.to_dtype(v, math)


def _sizes(node: Any, item: int | None) -> tuple[Any, ...]:
    meta = node.meta.get("val")
    if item is not None:
        meta = meta[item] if isinstance(meta, (list, tuple)) else None
    if not isinstance(meta, torch.Tensor):
        raise Unsupported("no tensor example value")
    return tuple(sympy.Integer(int(n)) for n in meta.shape)
