"""Math functions for generated kernels that ``triton.language`` lacks.

On a GPU they are libdevice calls. Triton's interpreter (``TRITON_INTERPRET=1``)
cannot run libdevice, so there each is written with ``tl`` primitives; those
versions exist only so CPU machines can check generated code.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tilefuse import plugin

INTERPRETED = plugin.triton_interpreted()  # read once: it decides what this module defines

if not INTERPRETED:
    try:
        from triton.language.extra import libdevice
    except ImportError:  # older triton layouts
        from triton.language.extra.cuda import libdevice

    @triton.jit
    def tanh(x):
        return libdevice.tanh(x)

    @triton.jit
    def pow(x, y):
        return libdevice.pow(x, y)

    @triton.jit
    def expm1(x):
        return libdevice.expm1(x)

    @triton.jit
    def log1p(x):
        return libdevice.log1p(x)

    @triton.jit
    def log10(x):
        return libdevice.log10(x)

    @triton.jit
    def tan(x):
        return libdevice.tan(x)

    @triton.jit
    def trunc(x):
        return libdevice.trunc(x)

    @triton.jit
    def round_even(x):
        return libdevice.nearbyint(x)

    @triton.jit
    def isnan(x):
        return x != x

    @triton.jit
    def isinf(x):
        return libdevice.isinf(x) != 0

    @triton.jit
    def signbit(x):
        return libdevice.signbit(x) != 0

    @triton.jit
    def copysign(x, y):
        return libdevice.copysign(x, y)

    @triton.jit
    def fmod(x, y):
        return libdevice.fmod(x, y)

    @triton.jit
    def sinh(x):
        return libdevice.sinh(x)

    @triton.jit
    def cosh(x):
        return libdevice.cosh(x)

    @triton.jit
    def asinh(x):
        return libdevice.asinh(x)

    @triton.jit
    def acosh(x):
        return libdevice.acosh(x)

    @triton.jit
    def atanh(x):
        return libdevice.atanh(x)

    @triton.jit
    def atan(x):
        return libdevice.atan(x)

    @triton.jit
    def asin(x):
        return libdevice.asin(x)

    @triton.jit
    def acos(x):
        return libdevice.acos(x)

    @triton.jit
    def atan2(y, x):
        return libdevice.atan2(y, x)

    @triton.jit
    def div_rn(x, y):
        # Triton's float32 `/` is approximate (div.full.f32); ATen divides exactly.
        return libdevice.div_rn(x, y)

    @triton.jit
    def to_bf16(x):
        return x.to(tl.bfloat16)

    @triton.jit
    def from_bf16(x):
        return x.to(tl.float32)

else:
    from . import interpreter_fixes

    interpreter_fixes.apply()

    @triton.jit
    def tanh(x):
        t = tl.exp(-2.0 * tl.abs(x))
        r = (1.0 - t) / (1.0 + t)
        return tl.where(x < 0, -r, r)

    @triton.jit
    def trunc(x):
        return tl.where(x >= 0, tl.floor(x), tl.ceil(x))

    @triton.jit
    def pow(x, y):
        mag = tl.exp2(y * tl.log2(tl.abs(x)))
        y_int = tl.floor(y) == y
        odd = y_int & ((tl.abs(y) % 2.0) == 1.0)
        neg = tl.where(odd, -mag, mag)
        res = tl.where(x < 0, tl.where(y_int, neg, float("nan")), mag)
        res = tl.where((x == 0) & (y > 0), 0.0, res)
        return tl.where(y == 0, 1.0, res)

    @triton.jit
    def expm1(x):
        return tl.exp(x) - 1.0

    @triton.jit
    def log1p(x):
        return tl.log(1.0 + x)

    @triton.jit
    def log10(x):
        return tl.log2(x) * 0.30102999566398120

    @triton.jit
    def tan(x):
        return tl.sin(x) / tl.cos(x)

    @triton.jit
    def round_even(x):
        # x - floor(x) is exact, so ties are seen exactly (x + 0.5 would round first).
        r = tl.floor(x)
        frac = x - r
        up = (frac > 0.5) | ((frac == 0.5) & ((r % 2.0) != 0.0))
        return tl.where(up, r + 1.0, r)

    @triton.jit
    def div_rn(x, y):
        return x / y

    @triton.jit
    def to_bf16(x):
        # float32 -> bfloat16 rounding to nearest even; the interpreter's own cast truncates.
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        quiet_nan = (bits >> 16) | 0x40
        hi = tl.where(x != x, quiet_nan, rounded).to(tl.uint16)
        return hi.to(tl.bfloat16, bitcast=True)

    @triton.jit
    def from_bf16(x):
        # bfloat16 -> float32 is a 16-bit shift; the interpreter's cast flushes subnormals.
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def isnan(x):
        return x != x

    @triton.jit
    def isinf(x):
        return tl.abs(x) == float("inf")

    @triton.jit
    def signbit(x):
        return (x < 0) | ((x == 0) & ((1.0 / x) < 0))

    @triton.jit
    def copysign(x, y):
        return tl.where(signbit(y), -tl.abs(x), tl.abs(x))

    @triton.jit
    def fmod(x, y):
        return x % y  # the interpreter's float `%` is numpy.fmod: exact

    @triton.jit
    def sinh(x):
        return 0.5 * (tl.exp(x) - tl.exp(-x))

    @triton.jit
    def cosh(x):
        return 0.5 * (tl.exp(x) + tl.exp(-x))

    @triton.jit
    def asinh(x):
        a = tl.abs(x)
        r = tl.log(a + tl.sqrt(a * a + 1.0))
        return tl.where(x < 0, -r, r)

    @triton.jit
    def acosh(x):
        return tl.log(x + tl.sqrt(x * x - 1.0))

    @triton.jit
    def atanh(x):
        return 0.5 * tl.log((1.0 + x) / (1.0 - x))

    @triton.jit
    def _atan_unit(x):
        # |x| <= 1: a rational first guess refined by Newton steps on tan(y) = x.
        y = x / (1.0 + 0.28 * x * x)
        for _ in tl.static_range(3):
            s = tl.sin(y)
            c = tl.cos(y)
            y = y - (s * c - x * c * c)
        return y

    @triton.jit
    def atan(x):
        a = tl.abs(x)
        big = a > 1.0
        inv = tl.where(big, 1.0 / tl.where(a == 0, 1.0, a), a)
        r = _atan_unit(inv)
        r = tl.where(big, 1.5707963267948966 - r, r)
        return tl.where(x < 0, -r, r)

    @triton.jit
    def asin(x):
        return atan(x / tl.sqrt(1.0 - x * x))

    @triton.jit
    def acos(x):
        return 1.5707963267948966 - asin(x)

    @triton.jit
    def atan2(y, x):
        base = atan(y / x)
        pi = 3.141592653589793
        r = tl.where(x > 0, base, tl.where(y >= 0, base + pi, base - pi))
        r = tl.where(x == 0, tl.where(y > 0, pi / 2, tl.where(y < 0, -pi / 2, 0.0)), r)
        return r


@triton.jit
def floordiv(a, b):
    # ATen's div_floor_floating: exact fmod first, so e.g. 1.0 // 0.1 is 9, not 10.
    mod = fmod(a, b)
    div = div_rn(a - mod, b)
    div = tl.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1.0, div)
    fl = tl.floor(div)
    fl = tl.where(div - fl > 0.5, fl + 1.0, fl)
    q = div_rn(a, b)
    res = tl.where(div != 0, fl, q * 0.0)  # a zero with the sign of a / b
    return tl.where(b == 0, q, res)


@triton.jit
def remainder(a, b):
    # ATen: fmod, moved by b when its sign differs from b's.
    mod = fmod(a, b)
    return tl.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod)


@triton.jit
def ipow(x, y):
    # Integer power by binary exponentiation over every bit of y (wrapping like ATen);
    # y < 0 follows ATen: 1 for x == 1, +-1 for x == -1, 0 otherwise.
    base = x + y * 0
    e = y + x * 0
    neg = e < 0
    e = tl.where(neg, 0, e)
    result = base * 0 + 1
    for _ in tl.static_range(64):
        result = tl.where((e & 1) != 0, result * base, result)
        base = base * base
        e = e >> 1
    zero = result * 0
    one = zero + 1
    minus_one = zero - one  # no negative literal: unsigned types refuse one
    odd = ((y + x * 0) & 1) != 0
    special = tl.where(x == one, one, tl.where(x == minus_one, tl.where(odd, minus_one, one), zero))
    return tl.where(neg, special, result)


@triton.jit
def prod_combine(a, b):
    return a * b


@triton.jit
def max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def min_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def argmax_combine(a_value, a_index, b_value, b_index):
    # torch: NaN is the largest value; ties go to the smaller index.
    a_nan = a_value != a_value
    b_nan = b_value != b_value
    same = (b_value == a_value) | (a_nan & b_nan)
    take_b = ((b_value > a_value) & ~a_nan) | (b_nan & ~a_nan) | (same & (b_index < a_index))
    return tl.where(take_b, b_value, a_value), tl.where(take_b, b_index, a_index)


@triton.jit
def argmin_combine(a_value, a_index, b_value, b_index):
    # torch: NaN is the smallest value for argmin too (it is reported first).
    a_nan = a_value != a_value
    b_nan = b_value != b_value
    same = (b_value == a_value) | (a_nan & b_nan)
    take_b = ((b_value < a_value) & ~a_nan) | (b_nan & ~a_nan) | (same & (b_index < a_index))
    return tl.where(take_b, b_value, a_value), tl.where(take_b, b_index, a_index)
