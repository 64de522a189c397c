"""Math functions for generated kernels that ``triton.language`` lacks.

On a GPU they are libdevice calls. Triton's interpreter (``TRITON_INTERPRET=1``)
cannot run libdevice, so there each is written with ``tl`` primitives; those
versions exist only so CPU machines can check generated code.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "") == "1"

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

else:

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
        r = tl.floor(x + 0.5)
        tie = (r - x) == 0.5
        odd = (r % 2.0) != 0.0
        return tl.where(tie & odd, r - 1.0, r)

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
        return x - trunc(x / y) * y

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
