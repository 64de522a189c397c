"""The table from tilefuse op name to C++ text, with torch's result dtypes.

Values are C++ expressions typed by their torch dtype (``C_TYPES``); bfloat16 and float16
values live in ``float`` variables and are rounded to their precision after every op
(``ROUND``), which is what eager torch does op by op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from tilefuse.errors import Unsupported

C_TYPES = {
    torch.float32: "float", torch.float64: "double", torch.float16: "float",
    torch.bfloat16: "float", torch.int64: "int64_t", torch.int32: "int32_t",
    torch.int16: "int16_t", torch.int8: "int8_t", torch.uint8: "uint8_t", torch.bool: "bool",
}  # fmt: skip
# How a dtype is stored in memory, when that differs from its C_TYPES variable type.
MEMORY_TYPES = {torch.float16: "_Float16", torch.bfloat16: "uint16_t"}
ROUND = {torch.bfloat16: "tf_round_bf16", torch.float16: "tf_round_f16"}
FROM_MEMORY = {torch.bfloat16: "tf_from_bf16", torch.float16: "tf_from_f16"}
TO_MEMORY = {torch.bfloat16: "tf_to_bf16", torch.float16: "tf_to_f16"}

BOOL_RESULT = {
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
    "logical_not", "isnan", "isinf", "signbit",
}  # fmt: skip
STD_MATH = {
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf",
}  # fmt: skip
ROUNDING = {
    "floor": "std::floor",
    "ceil": "std::ceil",
    "trunc": "std::trunc",
    "round": "std::nearbyint",
}  # fmt: skip  (nearbyint: half to even, as torch)
INFIX = {
    "add": "+", "sub": "-", "mul": "*", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
    "gt": ">", "ge": ">=", "bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^",
}  # fmt: skip
# Ops whose helper differs for floats and integers: (float form, integer form).
SPLIT = {
    "floordiv": ("tf_floordiv_float<{t}>({0}, {1})", "tf_floordiv_int<{t}>({0}, {1})"),
    "remainder": ("tf_remainder_float<{t}>({0}, {1})", "tf_remainder_int<{t}>({0}, {1})"),
    "fmod": ("std::fmod(({t}){0}, ({t}){1})", "tf_fmod_int<{t}>({0}, {1})"),
    "pow": ("std::pow(({t}){0}, ({t}){1})", "tf_ipow<{t}>({0}, {1})"),
    "abs": ("std::abs({0})", "({0} < 0 ? -{0} : {0})"),
    "isnan": ("std::isnan({0})", "false"),
    "isinf": ("std::isinf({0})", "false"),
    "signbit": ("std::signbit({0})", "({0} < 0)"),
    "bitwise_not": (None, "(~{0})"),
}
OTHER = {
    "neg": "(-{0})",
    "sigmoid": "({t}(1) / ({t}(1) + std::exp(-{0})))",
    "rsqrt": "({t}(1) / std::sqrt({0}))",
    "reciprocal": "({t}(1) / {0})",
    "sign": "tf_sign<{t}>({0})",
    "logical_not": "(!{0})",
    "logical_and": "(({0} != 0) && ({1} != 0))",
    "logical_or": "(({0} != 0) || ({1} != 0))",
    "logical_xor": "(({0} != 0) != ({1} != 0))",
    "maximum": "tf_maximum<{t}>({0}, {1})",
    "minimum": "tf_minimum<{t}>({0}, {1})",
    "atan2": "std::atan2(({t}){0}, ({t}){1})",
    "copysign": "std::copysign(({t}){0}, ({t}){1})",
}


def result_dtype(name: str, dtypes: list[torch.dtype]) -> torch.dtype:
    """The dtype of ``name`` applied to values of ``dtypes`` (the IR promotes operands
    beforehand, so the first operand's dtype is the result's, as in torch)."""
    if name in BOOL_RESULT:
        return torch.bool
    if name == "truediv" and not dtypes[0].is_floating_point:
        return torch.get_default_dtype()
    return dtypes[0]


def render_op(name: str, args: list[str], dtypes: list[torch.dtype]) -> str:
    """C++ text of ``name`` applied to the C++ expressions ``args`` of torch ``dtypes``.

    Raises ``Unsupported`` for an op that the table does not know.
    """
    out = result_dtype(name, dtypes)
    is_float = dtypes[0].is_floating_point
    t = C_TYPES[out if out != torch.bool else dtypes[0]]
    if name in INFIX:
        return f"({args[0]} {INFIX[name]} {args[1]})"
    if name == "truediv":
        return f"(({t}){args[0]} / ({t}){args[1]})"
    if name in STD_MATH:
        return f"std::{name}({args[0]})"
    if name in ROUNDING:
        return f"{ROUNDING[name]}({args[0]})" if is_float else args[0]
    if dtypes[0] == torch.bool and name in ("bitwise_not", "abs", "sign"):
        return f"(!{args[0]})" if name == "bitwise_not" else args[0]
    if name in SPLIT:
        form = SPLIT[name][0 if is_float else 1]
        if form is None:
            raise Unsupported(f"acme: {name} of {dtypes[0]} has no meaning in torch")
        return form.format(*args, t=t)
    if name in OTHER:
        return OTHER[name].format(*args, t=t)
    raise Unsupported(f"acme: no C++ rendering for op {name!r}")


def literal(value: Any, dtype: torch.dtype) -> str:
    """A C++ literal of ``value`` as torch would hold it in ``dtype`` (integers wrap into
    the dtype's range; 16-bit floats are rounded to their precision)."""
    if dtype == torch.bool:
        return "true" if value else "false"
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        wrapped = int(value) & ((1 << info.bits) - 1)
        if wrapped > info.max:
            wrapped -= 1 << info.bits
        if wrapped == -(1 << 63):
            return "(-INT64_C(9223372036854775807) - 1)"
        return f"(({C_TYPES[dtype]})INT64_C({wrapped}))"
    value = float(value)
    if dtype in ROUND:
        value = float(torch.tensor(value, dtype=torch.float32).to(dtype).float().item())
    t = C_TYPES[dtype]
    if math.isnan(value):
        return f"std::numeric_limits<{t}>::quiet_NaN()"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}std::numeric_limits<{t}>::infinity()"
    text = repr(value)
    return f"{text}f" if t == "float" else text


def converter(src: torch.dtype, dst: torch.dtype) -> Callable[[str], str]:
    """How a value of ``src`` becomes ``dst`` as torch converts: floats to ints truncate
    toward zero, anything to bool is ``!= 0`` (NaN is true), 16-bit floats round."""
    if dst == torch.bool:
        return lambda v: f"({v} != 0)"
    if dst in ROUND:
        return lambda v: f"{ROUND[dst]}((float)({v}))"
    t = C_TYPES[dst]
    if src.is_floating_point and not dst.is_floating_point:
        return lambda v: f"(({t})(int64_t)({v}))"  # through int64: no UB for uint8
    return lambda v: f"(({t})({v}))"
