"""The table from IR op to Triton source text, and reduction building blocks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

_FLOAT_RESULT = {"truediv"}
_BOOL_RESULT = {
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
    "logical_not", "isnan", "isinf", "signbit",
}  # fmt: skip

TABLE: dict[str, str] = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "truediv": "({0} / {1})",
    "neg": "(-{0})", "abs": "tl.abs({0})", "exp": "tl.exp({0})", "exp2": "tl.exp2({0})",
    "expm1": "dm.expm1({0})", "log": "tl.log({0})", "log2": "tl.log2({0})",
    "log10": "dm.log10({0})", "log1p": "dm.log1p({0})", "sqrt": "tl.sqrt({0})",
    "rsqrt": "tl.rsqrt({0})", "sin": "tl.sin({0})", "cos": "tl.cos({0})", "tan": "dm.tan({0})",
    "asin": "dm.asin({0})", "acos": "dm.acos({0})", "atan": "dm.atan({0})",
    "sinh": "dm.sinh({0})", "cosh": "dm.cosh({0})", "tanh": "dm.tanh({0})",
    "asinh": "dm.asinh({0})", "acosh": "dm.acosh({0})", "atanh": "dm.atanh({0})",
    "sigmoid": "tl.sigmoid({0})", "erf": "tl.erf({0})", "floor": "tl.floor({0})",
    "ceil": "tl.ceil({0})", "trunc": "dm.trunc({0})", "round": "dm.round_even({0})",
    "reciprocal": "(1.0 / {0})", "logical_not": "({0} == 0)",
    "isnan": "dm.isnan({0})", "isinf": "dm.isinf({0})", "signbit": "dm.signbit({0})",
    "pow": "dm.pow({0}, {1})", "maximum": "tl.maximum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "minimum": "tl.minimum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "eq": "({0} == {1})", "ne": "({0} != {1})", "lt": "({0} < {1})", "le": "({0} <= {1})",
    "gt": "({0} > {1})", "ge": "({0} >= {1})",
    # ``!= 0`` again on the result: Triton may promote ``int1 & int1`` to int32, and
    # ``tl.where`` is deprecating non-boolean conditions.
    "logical_and": "((({0} != 0) & ({1} != 0)) != 0)",
    "logical_or": "((({0} != 0) | ({1} != 0)) != 0)",
    "logical_xor": "((({0} != 0) ^ ({1} != 0)) != 0)",
    "bitwise_and": "({0} & {1})", "bitwise_or": "({0} | {1})", "bitwise_xor": "({0} ^ {1})",
    "atan2": "dm.atan2({0}, {1})", "copysign": "dm.copysign({0}, {1})", "fmod": "dm.fmod({0}, {1})",
}  # fmt: skip


def _sign(a: Any) -> str:
    return f"(({a} > 0).to({_tl(a)}) - ({a} < 0).to({_tl(a)}))"


def _is_float(*args: Any) -> bool:
    return any(getattr(a, "dtype", torch.float32).is_floating_point for a in args)


# Integer division and remainder use Triton's integer ``//`` and ``%``, which truncate
# toward zero as C does; floats follow ATen's formulas built on an exact fmod.
def _floordiv(a: Any, b: Any) -> str:
    if _is_float(a, b):
        return f"dm.floordiv({a}, {b})"
    q = f"({a} // {b})"
    fix = f"((({a} % {b}) != 0) & (({a} < 0) != ({b} < 0)))"
    return f"tl.where({fix}, {q} - 1, {q})"


def _remainder(a: Any, b: Any) -> str:
    if _is_float(a, b):
        return f"dm.remainder({a}, {b})"
    r = f"({a} % {b})"
    return f"tl.where(({r} != 0) & (({r} < 0) != ({b} < 0)), {r} + {b}, {r})"


def _fmod(a: Any, b: Any) -> str:
    if _is_float(a, b):
        return f"dm.fmod({a}, {b})"
    return f"({a} % {b})"


def _float32(*args: Any) -> bool:
    return any(getattr(a, "dtype", None) == torch.float32 for a in args)


def _truediv(a: Any, b: Any) -> str:
    # Triton's float32 `/` is approximate on GPUs (up to 2 ulp); ATen's division is IEEE.
    return f"dm.div_rn({a}, {b})" if _float32(a, b) else f"({a} / {b})"


def _reciprocal(a: Any) -> str:
    return f"dm.div_rn(1.0, {a})" if _float32(a) else f"(1.0 / {a})"


def _pow(a: Any, b: Any) -> str:
    if _is_float(a, b):
        return f"dm.pow({a}, {b})"
    return f"dm.ipow({a}, {b})"


def _identity_for_ints(name: str) -> Callable[..., str]:
    """floor/ceil/trunc/round leave integers as they are (``tl.floor`` takes floats only)."""
    fmt = TABLE[name]

    def render(a: Any) -> str:
        return fmt.format(a) if _is_float(a) else str(a)

    return render


def _tl(a: Any) -> str:
    from .kernel_writer import TL_DTYPES

    return TL_DTYPES[a.dtype]


def _bitwise_not(a: Any) -> str:
    if a.dtype == torch.bool:  # ~True is -2 on Python ints; logical not for bools
        return f"({a} == 0)"
    return f"(~{a})"


def _bitwise_on_bools(name: str) -> Callable[..., str]:
    """``&``/``|``/``^``, as the logical op when both operands are bools: a literal ``True``
    is the int ``1``, and ``1 & mask`` is an int32 that ``tl.where`` will refuse."""
    bitwise = TABLE[name]
    logical = TABLE[name.replace("bitwise", "logical")]

    def render(a: Any, b: Any) -> str:
        bools = getattr(a, "dtype", None) == getattr(b, "dtype", None) == torch.bool
        return (logical if bools else bitwise).format(a, b)

    return render


def template(name: str) -> Callable[..., str]:
    if name == "bitwise_not":
        return _bitwise_not
    if name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
        return _bitwise_on_bools(name)
    if name == "sign":
        return _sign
    if name == "floordiv":
        return _floordiv
    if name == "remainder":
        return _remainder
    if name == "fmod":
        return _fmod
    if name == "truediv":
        return _truediv
    if name == "reciprocal":
        return _reciprocal
    if name == "pow":
        return _pow
    if name in ("floor", "ceil", "trunc", "round"):
        return _identity_for_ints(name)
    fmt = TABLE[name]
    return lambda *args: fmt.format(*args)


def result_dtype(name: str, args: Sequence[Any]) -> torch.dtype:
    if name in _BOOL_RESULT:
        return torch.bool
    for a in args:
        dtype = getattr(a, "dtype", None)
        if dtype is not None:
            return dtype
    return torch.float32


def constant(value: Any, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "1" if value else "0"
    if dtype is not None and not dtype.is_floating_point:
        # Wrapped into the dtype's range as torch casts a Python int (-1 as uint8 is 255):
        # Triton refuses a negative literal next to an unsigned tensor.
        info = torch.iinfo(dtype)
        wrapped = int(value) & ((1 << info.bits) - 1)
        if wrapped > info.max:
            wrapped -= 1 << info.bits
        return str(wrapped)
    value = float(value)
    if dtype in (torch.float16, torch.bfloat16):
        # Round here: the interpreter truncates a Python float to bf16 instead.
        value = float(torch.tensor(value, dtype=torch.float32).to(dtype).item())
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(value)


def reduction_init(kind: str, dtype: torch.dtype) -> str:
    if kind in ("sum", "any"):
        return "0"
    if kind == "prod":
        return "1"
    if kind in ("max", "argmax"):
        return 'float("-inf")' if dtype.is_floating_point else str(torch.iinfo(dtype).min)
    if kind in ("min", "argmin"):
        return 'float("inf")' if dtype.is_floating_point else str(torch.iinfo(dtype).max)
    raise ValueError(f"unknown reduction {kind!r}")


def reduction_combine(kind: str, acc: str, value: str) -> str:
    if kind == "sum":
        return f"{acc} + {value}"
    if kind == "prod":
        return f"{acc} * {value}"
    if kind in ("max", "any"):
        return f"tl.maximum({acc}, {value}, propagate_nan=tl.PropagateNan.ALL)"
    if kind == "min":
        return f"tl.minimum({acc}, {value}, propagate_nan=tl.PropagateNan.ALL)"
    raise ValueError(kind)


def reduction_final(kind: str, value: str) -> str:
    if kind == "sum":
        return f"tl.sum({value}, 1)"
    if kind == "prod":
        return f"tl.reduce({value}, 1, dm.prod_combine)"
    if kind == "any":
        return f"tl.max({value}, 1)"
    if kind == "max":  # tl.max drops NaN; torch.amax propagates it
        return f"tl.reduce({value}, 1, dm.max_nan)"
    if kind == "min":
        return f"tl.reduce({value}, 1, dm.min_nan)"
    raise ValueError(kind)
