"""Elementwise lowerings: math, comparisons, logic, casts, where, clamp, activations."""

from __future__ import annotations

import math

import torch

from ...ir.ops import ops
from ..lowering import Unsupported, register
from .common import compute_dtype, out_meta, pointwise, promoted_dtype

aten = torch.ops.aten

# Unary ops whose result is computed in the (upcast) output dtype.
_UNARY = {
    aten.neg: "neg", aten.abs: "abs", aten.exp: "exp", aten.exp2: "exp2", aten.expm1: "expm1",
    aten.log: "log", aten.log2: "log2", aten.log10: "log10", aten.log1p: "log1p",
    aten.sqrt: "sqrt", aten.rsqrt: "rsqrt", aten.sin: "sin", aten.cos: "cos", aten.tan: "tan",
    aten.asin: "asin", aten.acos: "acos", aten.atan: "atan", aten.sinh: "sinh",
    aten.cosh: "cosh", aten.tanh: "tanh", aten.asinh: "asinh", aten.acosh: "acosh",
    aten.atanh: "atanh", aten.sigmoid: "sigmoid", aten.erf: "erf",
    aten.reciprocal: "reciprocal", aten.bitwise_not: "bitwise_not", aten.sign: "sign",
}  # fmt: skip

# Rounding ops: the identity on integers and bools.
_ROUNDING = {aten.floor: "floor", aten.ceil: "ceil", aten.trunc: "trunc", aten.fix: "trunc"}

# Binary ops computed in the (upcast) promoted dtype of their inputs.
_BINARY = {
    aten.mul: "mul", aten.maximum: "maximum", aten.minimum: "minimum",
    aten.remainder: "remainder", aten.fmod: "fmod", aten.atan2: "atan2",
    aten.floor_divide: "floordiv", aten.bitwise_and: "bitwise_and",
    aten.bitwise_or: "bitwise_or", aten.bitwise_xor: "bitwise_xor",
    aten.copysign: "copysign",
}  # fmt: skip

_COMPARE = {
    aten.eq: "eq", aten.ne: "ne", aten.lt: "lt", aten.le: "le", aten.gt: "gt", aten.ge: "ge",
}  # fmt: skip

_LOGICAL = {aten.logical_and: "logical_and", aten.logical_or: "logical_or",
            aten.logical_xor: "logical_xor"}  # fmt: skip


def _unary(name: str):
    def lower(ctx, node, x, *rest, **kwargs):
        math_dtype = compute_dtype(out_meta(node).dtype)
        return pointwise(node, [x], lambda a: getattr(ops, name)(a), math_dtype=math_dtype)

    return lower


def _binary(name: str):
    def lower(ctx, node, a, b, *rest, **kwargs):
        math_dtype = compute_dtype(out_meta(node).dtype)
        if name in ("floordiv", "remainder", "fmod", "bitwise_and", "bitwise_or", "bitwise_xor"):
            math_dtype = compute_dtype(promoted_dtype([a, b]))
        return pointwise(node, [a, b], lambda x, y: getattr(ops, name)(x, y), math_dtype=math_dtype)

    return lower


def _compare(name: str):
    def lower(ctx, node, a, b, **kwargs):
        math_dtype = compute_dtype(promoted_dtype([a, b]))
        return pointwise(node, [a, b], lambda x, y: getattr(ops, name)(x, y), math_dtype=math_dtype)

    return lower


def _logical(name: str):
    def lower(ctx, node, a, b, **kwargs):
        return pointwise(node, [a, b], lambda x, y: getattr(ops, name)(x, y), math_dtype=torch.bool)

    return lower


def _rounding(name: str):
    def lower(ctx, node, x):
        dtype = out_meta(node).dtype
        if not dtype.is_floating_point:
            return pointwise(node, [x], lambda v: v, math_dtype=dtype)
        return pointwise(node, [x], getattr(ops, name), math_dtype=compute_dtype(dtype))

    return lower


for _op, _name in _UNARY.items():
    register(_op)(_unary(_name))
for _op, _name in _ROUNDING.items():
    register(_op)(_rounding(_name))
for _op, _name in _BINARY.items():
    register(_op)(_binary(_name))
for _op, _name in _COMPARE.items():
    register(_op)(_compare(_name))
for _op, _name in _LOGICAL.items():
    register(_op)(_logical(_name))


@register(aten.round)
def _round(ctx, node, x, *, decimals=0):
    """Round half to even; with ``decimals`` ATen scales by ``10**|decimals|`` in the
    math dtype: ``round(x * s) / s``, or ``round(x / s) * s`` for negative decimals."""
    dtype = out_meta(node).dtype
    if not dtype.is_floating_point:
        return pointwise(node, [x], lambda v: v, math_dtype=dtype)
    math_dtype = compute_dtype(dtype)
    if decimals == 0:
        return pointwise(node, [x], ops.round, math_dtype=math_dtype)
    # 10**n as ATen computes it: std::pow in double, then cast to the math dtype
    # (the constant is rounded to float32 when rendered).
    scale = float(10.0 ** abs(decimals))

    def body(v):
        s = ops.constant(scale, math_dtype)
        if decimals < 0:
            return ops.mul(ops.round(ops.truediv(v, s)), s)
        return ops.truediv(ops.round(ops.mul(v, s)), s)

    return pointwise(node, [x], body, math_dtype=math_dtype)


@register(aten.logical_not)
def _logical_not(ctx, node, x):
    return pointwise(node, [x], ops.logical_not, math_dtype=torch.bool)


@register(aten.isnan)
def _isnan(ctx, node, x):
    return pointwise(node, [x], ops.isnan, math_dtype=compute_dtype(x.dtype))


@register(aten.isinf)
def _isinf(ctx, node, x):
    if not x.dtype.is_floating_point:  # libdevice's isinf takes floats only
        return pointwise(node, [x], lambda v: ops.constant(False, torch.bool), math_dtype=x.dtype)
    return pointwise(node, [x], ops.isinf, math_dtype=compute_dtype(x.dtype))


@register(aten.signbit)
def _signbit(ctx, node, x):
    if x.dtype in (torch.bool, torch.uint8):
        return pointwise(node, [x], lambda v: ops.constant(False, torch.bool), math_dtype=x.dtype)
    if not x.dtype.is_floating_point:  # signed integers: the sign is ``< 0``
        return pointwise(node, [x], lambda v: ops.lt(v, ops.constant(0, x.dtype)),
                         math_dtype=x.dtype)  # fmt: skip
    return pointwise(node, [x], ops.signbit, math_dtype=compute_dtype(x.dtype))


@register(aten.addcmul, aten.addcdiv)
def _addc(ctx, node, x, t1, t2, *, value=1):
    """``x + value * (t1 * t2)`` (``/`` for addcdiv) rounded once, as eager computes it:
    the decomposition would round every step to a half type."""
    dtype = compute_dtype(out_meta(node).dtype)
    divide = node.target.overloadpacket is aten.addcdiv

    def body(a, b, c):
        term = ops.truediv(b, c) if divide else ops.mul(b, c)
        if value != 1:
            term = ops.mul(ops.constant(value, dtype), term)
        return ops.add(a, term)

    return pointwise(node, [x, t1, t2], body, math_dtype=dtype)


@register(aten.add)
def _add(ctx, node, a, b, alpha=1):
    dtype = compute_dtype(out_meta(node).dtype)
    if dtype == torch.bool:  # True + True is True in torch; a 1-bit add would wrap
        if not alpha:  # a + False * b is a
            return pointwise(node, [a, b], lambda x, y: x, math_dtype=dtype)
        return pointwise(node, [a, b], ops.logical_or, math_dtype=dtype)
    if alpha != 1:
        return pointwise(
            node,
            [a, b],
            lambda x, y: ops.add(x, ops.mul(y, ops.constant(alpha, dtype))),
            math_dtype=dtype,
        )
    return pointwise(node, [a, b], ops.add, math_dtype=dtype)


@register(aten.sub, aten.rsub)
def _sub(ctx, node, a, b, alpha=1):
    dtype = compute_dtype(out_meta(node).dtype)
    if node.target.overloadpacket is aten.rsub:
        a, b = b, a
    if alpha != 1:
        return pointwise(
            node,
            [a, b],
            lambda x, y: ops.sub(x, ops.mul(y, ops.constant(alpha, dtype))),
            math_dtype=dtype,
        )
    return pointwise(node, [a, b], ops.sub, math_dtype=dtype)


@register(aten.div)
def _div(ctx, node, a, b, rounding_mode=None):
    if rounding_mode is None:
        dtype = compute_dtype(out_meta(node).dtype)
        return pointwise(node, [a, b], ops.truediv, math_dtype=dtype)
    dtype = compute_dtype(promoted_dtype([a, b]))
    if rounding_mode == "floor":
        return pointwise(node, [a, b], ops.floordiv, math_dtype=dtype)
    if rounding_mode == "trunc":
        if dtype.is_floating_point:
            return pointwise(
                node, [a, b], lambda x, y: ops.trunc(ops.truediv(x, y)), math_dtype=dtype
            )
        # a - fmod(a, b) is an exact multiple of b (and never overflows: it moves
        # toward zero), so flooring its quotient truncates a / b, in integer math.
        return pointwise(
            node, [a, b], lambda x, y: ops.floordiv(ops.sub(x, ops.fmod(x, y)), y), math_dtype=dtype
        )
    raise Unsupported(f"rounding_mode={rounding_mode!r}")


@register(aten.where)
def _where(ctx, node, cond, a, b):
    dtype = compute_dtype(out_meta(node).dtype)
    from .common import loader, out_sizes

    size = out_sizes(node)
    load_c = loader(cond, size, torch.bool)
    load_a = loader(a, size, dtype)
    load_b = loader(b, size, dtype)
    out_dtype = out_meta(node).dtype
    from ..values import LazyValue
    from .common import device_of

    def fn(index):
        return ops.to_dtype(ops.where(load_c(index), load_a(index), load_b(index)), out_dtype)

    return LazyValue(out_dtype, device_of([cond, a, b], node), size, fn)


@register(aten.clamp, aten.clamp_min, aten.clamp_max)
def _clamp(ctx, node, x, lo=None, hi=None):
    packet = node.target.overloadpacket
    if packet is aten.clamp_max:
        lo, hi = None, lo
    dtype = compute_dtype(out_meta(node).dtype)
    args = [x] + [v for v in (lo, hi) if v is not None]

    def body(v, *bounds):
        i = 0
        if lo is not None:
            v = ops.maximum(v, bounds[i])
            i += 1
        if hi is not None:
            v = ops.minimum(v, bounds[i])
        return v

    return pointwise(node, args, body, math_dtype=dtype)


@register(aten.relu)
def _relu(ctx, node, x):
    dtype = compute_dtype(out_meta(node).dtype)
    return pointwise(node, [x], lambda v: ops.maximum(v, ops.constant(0, dtype)), math_dtype=dtype)


@register(aten.hardtanh)
def _hardtanh(ctx, node, x, min_val=-1.0, max_val=1.0):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(v):
        v = ops.maximum(v, ops.constant(min_val, dtype))
        return ops.minimum(v, ops.constant(max_val, dtype))

    return pointwise(node, [x], body, math_dtype=dtype)


@register(aten.hardtanh_backward)
def _hardtanh_backward(ctx, node, grad, x, min_val, max_val):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(g, v):
        outside = ops.logical_or(
            ops.le(v, ops.constant(min_val, dtype)), ops.ge(v, ops.constant(max_val, dtype))
        )
        return ops.where(outside, ops.constant(0, dtype), g)

    return pointwise(node, [grad, x], body, math_dtype=dtype)


@register(aten.silu)
def _silu(ctx, node, x):
    dtype = compute_dtype(out_meta(node).dtype)
    return pointwise(node, [x], lambda v: ops.mul(v, ops.sigmoid(v)), math_dtype=dtype)


def gelu_body(dtype: torch.dtype, approximate: str):
    def erf_form(v):
        inner = ops.erf(ops.mul(v, ops.constant(1.0 / math.sqrt(2.0), dtype)))
        return ops.mul(
            ops.mul(v, ops.constant(0.5, dtype)), ops.add(inner, ops.constant(1.0, dtype))
        )

    def tanh_form(v):
        cube = ops.mul(ops.mul(v, v), v)
        inner = ops.add(v, ops.mul(cube, ops.constant(0.044715, dtype)))
        t = ops.tanh(ops.mul(inner, ops.constant(math.sqrt(2.0 / math.pi), dtype)))
        return ops.mul(ops.mul(v, ops.constant(0.5, dtype)), ops.add(t, ops.constant(1.0, dtype)))

    return tanh_form if approximate == "tanh" else erf_form


@register(aten.gelu)
def _gelu(ctx, node, x, approximate="none"):
    dtype = compute_dtype(out_meta(node).dtype)
    return pointwise(node, [x], gelu_body(dtype, approximate), math_dtype=dtype)


@register(aten.leaky_relu)
def _leaky_relu(ctx, node, x, negative_slope=0.01):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(v):
        zero = ops.constant(0, dtype)
        return ops.where(ops.gt(v, zero), v, ops.mul(v, ops.constant(negative_slope, dtype)))

    return pointwise(node, [x], body, math_dtype=dtype)


@register(aten.threshold_backward)
def _threshold_backward(ctx, node, grad, x, threshold):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(g, v):
        return ops.where(ops.le(v, ops.constant(threshold, dtype)), ops.constant(0, dtype), g)

    return pointwise(node, [grad, x], body, math_dtype=dtype)


@register(aten.sigmoid_backward)
def _sigmoid_backward(ctx, node, grad, y):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(g, s):
        return ops.mul(g, ops.mul(s, ops.sub(ops.constant(1.0, dtype), s)))

    return pointwise(node, [grad, y], body, math_dtype=dtype)


@register(aten.tanh_backward)
def _tanh_backward(ctx, node, grad, y):
    dtype = compute_dtype(out_meta(node).dtype)

    def body(g, t):
        return ops.mul(g, ops.sub(ops.constant(1.0, dtype), ops.mul(t, t)))

    return pointwise(node, [grad, y], body, math_dtype=dtype)


@register(aten.alias, aten.detach)
def _alias(ctx, node, x):
    """The same value: in eager these share ``x``'s memory. A graph returning both ``x``
    and its alias (a forward saving log_softmax for its backward) returns one buffer
    twice instead of writing a copy."""
    return x


@register(aten._to_copy, aten.clone, aten.lift_fresh_copy, aten.contiguous, aten._conj,
          aten.positive)  # fmt: skip
def _copy(ctx, node, x, *args, **kwargs):
    meta = out_meta(node)
    if meta.device != x.device:
        raise Unsupported("device transfer")
    dtype = meta.dtype
    return pointwise(node, [x], lambda v: v, math_dtype=dtype)


@register(aten.masked_fill)
def _masked_fill(ctx, node, x, mask, value):
    dtype = compute_dtype(out_meta(node).dtype)
    from .common import loader, out_sizes

    size = out_sizes(node)
    load_x = loader(x, size, dtype)
    load_m = loader(mask, size, torch.bool)
    load_v = loader(value, size, dtype)
    out_dtype = out_meta(node).dtype
    from ..values import LazyValue

    def fn(index):
        return ops.to_dtype(ops.where(load_m(index), load_v(index), load_x(index)), out_dtype)

    return LazyValue(out_dtype, x.device, size, fn)


def _int_power(v, n: int):
    """``v ** n`` for a constant ``n >= 0`` by repeated squaring (wraps as ATen does)."""
    result = None
    base = v
    while n:
        if n & 1:
            result = base if result is None else ops.mul(result, base)
        n >>= 1
        if n:
            base = ops.mul(base, base)
    return result


@register(aten.pow)
def _pow(ctx, node, a, b):
    """Small constant exponents become multiplies (libdevice pow is much slower);
    integer powers stay in integer math."""
    dtype = compute_dtype(out_meta(node).dtype)
    if not dtype.is_floating_point:
        if dtype.is_complex or dtype == torch.bool:
            raise Unsupported(f"pow in {dtype}")
        if isinstance(b, int) and not isinstance(b, bool) and b >= 0:
            if b == 0:
                return pointwise(node, [a], lambda v: ops.constant(1, dtype), math_dtype=dtype)
            return pointwise(node, [a], lambda v: _int_power(v, b), math_dtype=dtype)
        return pointwise(node, [a, b], ops.pow, math_dtype=dtype)
    if isinstance(b, (int, float)) and not isinstance(b, bool) and dtype.is_floating_point:
        if b == 2:
            return pointwise(node, [a], lambda v: ops.mul(v, v), math_dtype=dtype)
        if b == 3:
            return pointwise(node, [a], lambda v: ops.mul(ops.mul(v, v), v), math_dtype=dtype)
        if b == 1:
            return pointwise(node, [a], lambda v: v, math_dtype=dtype)
        if b == 0.5:
            return pointwise(node, [a], ops.sqrt, math_dtype=dtype)
        if b == -1:
            return pointwise(node, [a], ops.reciprocal, math_dtype=dtype)
        if b == -0.5:
            return pointwise(node, [a], ops.rsqrt, math_dtype=dtype)
    return pointwise(node, [a, b], ops.pow, math_dtype=dtype)
