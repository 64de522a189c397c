"""Extern ops in the C++ wrapper: which aten ops it calls through ATen, and how.

``CPP_EXTERNS`` is the documented subset: the aten ops whose extern calls the C++ wrapper
writes as ``at::_ops::<op>::call(...)`` (ATen's C++ entry for one overload, which goes
through the dispatcher exactly as the Python call does). Each call is rendered from the
op's schema, argument by argument, so arguments keep their schema order and omitted
ones take their schema defaults. An op outside the table, or an argument of a kind
``render_arg`` does not know, raises ``CppUnsupported`` naming it: the graph then runs
the Python wrapper (one warning), which calls every op.

Adding an op: put its qualified name (``"aten::name.overload"``, ``.default`` for the
unnamed overload) in ``CPP_EXTERNS``, after checking that its arguments render (the
tests generate and compile one call of each).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import TilefuseError
from ..ir.nodes import Buffer


class CppUnsupported(TilefuseError):
    """The graph needs something the C++ wrapper does not write; the message says what.

    Not an error for the user: the caller runs the Python wrapper instead.
    """


#: aten overloads the C++ wrapper calls directly (GEMMs that no template took,
#: convolutions, normalizations, attention, scans), forward and backward.
CPP_EXTERNS: frozenset[str] = frozenset({
    "aten::mm.default",
    "aten::addmm.default",
    "aten::bmm.default",
    "aten::baddbmm.default",
    "aten::convolution.default",
    "aten::convolution_backward.default",
    "aten::native_layer_norm.default",
    "aten::native_layer_norm_backward.default",
    "aten::native_group_norm.default",
    "aten::_scaled_dot_product_flash_attention.default",
    "aten::_scaled_dot_product_flash_attention_backward.default",
    "aten::_scaled_dot_product_efficient_attention.default",
    "aten::_scaled_dot_product_efficient_attention_backward.default",
    "aten::_scaled_dot_product_cudnn_attention.default",
    "aten::_scaled_dot_product_cudnn_attention_backward.default",
    "aten::_scaled_dot_product_flash_attention_for_cpu.default",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward.default",
    "aten::cumsum.default",  # GPT-2's position ids from its attention mask
    "aten::cumprod.default",
})  # fmt: skip

#: tilefuse's own extern ops -> the C++ function of the wrapper's prelude that computes
#: each one as its Python implementation does (``cpp_wrapper._PRELUDE``).
CPP_HELPERS: dict[str, str] = {
    "tilefuse::embedding_dense_backward_atomic.default": (
        "tilefuse_wrapper::embedding_dense_backward_atomic"
    ),
}

#: torch dtype -> ATen ScalarType enumerator.
SCALAR_TYPES: dict[torch.dtype, str] = {
    torch.float32: "Float",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float64: "Double",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def scalar_type(dtype: torch.dtype) -> str:
    """``at::ScalarType::<name>`` for ``dtype``; ``CppUnsupported`` for one not in the table."""
    if dtype not in SCALAR_TYPES:
        raise CppUnsupported(f"dtype {dtype} has no C++ spelling in the C++ wrapper")
    return f"at::ScalarType::{SCALAR_TYPES[dtype]}"


def qualified_name(op: Any) -> str:
    """``"aten::mm.default"`` for ``torch.ops.aten.mm.default``."""
    schema = getattr(op, "_schema", None)
    if schema is None:
        return repr(op)
    return f"{schema.name}.{schema.overload_name or 'default'}"


def _ops_struct(op: Any) -> str:
    schema = op._schema
    base = schema.name.split("::", 1)[1]
    return (
        f"at::_ops::{base}_{schema.overload_name}" if schema.overload_name else f"at::_ops::{base}"
    )


def cpp_float(value: float) -> str:
    if math.isnan(value):
        return "std::numeric_limits<double>::quiet_NaN()"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}std::numeric_limits<double>::infinity()"
    return repr(float(value))


def _ints(value: Any, n: int | None) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * (n or 1)  # ``int[2] stride=1`` means (1, 1)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise CppUnsupported(f"{value!r} is not a list of integers")
    return [int(v) for v in value]


def _int_vector(values: list[int]) -> str:
    # An ArrayRef over a braced list: no heap allocation per call. The list lives until the
    # end of the full expression, the extern call that reads it.
    return f"at::IntArrayRef{{{', '.join(str(v) for v in values)}}}"


def render_arg(kind: str, value: Any) -> str:
    """The C++ expression for ``value`` passed as a schema argument of type ``kind``
    (``"Tensor"``, ``"int[]"``, ``"ScalarType?"``...). ``CppUnsupported`` for a type or
    value it does not know."""
    optional = kind.endswith("?")
    base = kind[:-1] if optional else kind
    if value is None:
        if optional:
            return "std::nullopt"
        raise CppUnsupported(f"None for a non-optional {kind} argument")
    if base == "Tensor":
        if not isinstance(value, Buffer):
            raise CppUnsupported(f"a {kind} argument that is not a buffer ({value!r})")
        return value.name
    if base == "Tensor[]":
        if not all(isinstance(v, Buffer) for v in value):
            raise CppUnsupported("a Tensor[] argument with a non-buffer element")
        return f"std::vector<at::Tensor>{{{', '.join(v.name for v in value)}}}"
    array = base.startswith(("int[", "SymInt["))
    if array:
        size = base[base.index("[") + 1 : -1]
        ints = _int_vector(_ints(value, int(size) if size else None))
        if base.startswith("SymInt"):
            ints = f"c10::fromIntArrayRefSlow({ints})"
        if optional:
            wrapper = "SymIntArrayRef" if base.startswith("SymInt") else "IntArrayRef"
            return f"at::Optional{wrapper}({ints})"
        return ints
    if base.startswith("bool[") and base.endswith("]") and not optional:
        flags = list(value) if isinstance(value, (list, tuple)) else []
        if not flags or not all(isinstance(v, bool) for v in flags):
            raise CppUnsupported(f"{value!r} for a {kind} argument")
        inner = ", ".join("true" if v else "false" for v in flags)
        return f"std::array<bool, {len(flags)}>{{{inner}}}"
    if base in ("int", "SymInt"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise CppUnsupported(f"{value!r} for an {kind} argument")
        literal = f"int64_t({int(value)})"
        if base == "SymInt":
            literal = f"c10::SymInt({literal})"
        return (
            f"std::optional<{'c10::SymInt' if base == 'SymInt' else 'int64_t'}>({literal})"
            if optional
            else literal
        )
    if base == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CppUnsupported(f"{value!r} for a {kind} argument")
        return f"std::optional<double>({cpp_float(value)})" if optional else cpp_float(value)
    if base == "bool":
        if not isinstance(value, bool):
            raise CppUnsupported(f"{value!r} for a {kind} argument")
        literal = "true" if value else "false"
        return f"std::optional<bool>({literal})" if optional else literal
    if base == "ScalarType":
        if not isinstance(value, torch.dtype):
            raise CppUnsupported(f"{value!r} for a {kind} argument")
        literal = scalar_type(value)
        return f"std::optional<at::ScalarType>({literal})" if optional else literal
    if base == "Scalar":
        if isinstance(value, bool):
            return f"at::Scalar({'true' if value else 'false'})"
        if isinstance(value, int):
            return f"at::Scalar(int64_t({value}))"
        if isinstance(value, float):
            return f"at::Scalar({cpp_float(value)})"
    raise CppUnsupported(f"an argument of type {kind} ({value!r})")


def render_extern_call(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``at::_ops::<op>::call(...)`` (or the ``CPP_HELPERS`` function) for
    ``op(*args, **kwargs)``; ``CppUnsupported`` when the op is in neither table, an
    argument does not render, or one without a default is missing."""
    name = qualified_name(op)
    if name not in CPP_EXTERNS and name not in CPP_HELPERS:
        raise CppUnsupported(f"extern op {name} has no C++ call in the C++ wrapper's table")
    types = _argument_types(op)
    rendered = []
    for i, arg in enumerate(op._schema.arguments):
        if i < len(args):
            value = args[i]
        elif arg.name in kwargs:
            value = kwargs[arg.name]
        elif arg.has_default_value():
            value = arg.default_value
        else:
            raise CppUnsupported(f"extern op {name}: argument {arg.name!r} has no value")
        try:
            rendered.append(render_arg(types[i], value))
        except CppUnsupported as exc:
            raise CppUnsupported(f"extern op {name}, argument {arg.name!r}: {exc}") from None
    callee = CPP_HELPERS.get(name) or f"{_ops_struct(op)}::call"
    return f"{callee}({', '.join(rendered)})"


def _argument_types(op: Any) -> list[str]:
    """The declared type of each argument of ``op`` in schema order, as the schema writes
    it (``"SymInt[]"``, ``"bool[3]"``, ``"Tensor?"``): torch's ``Argument.type`` drops the
    SymInt and array-size distinctions that pick the C++ type."""
    from torchgen.model import FunctionSchema

    parsed = FunctionSchema.parse(str(op._schema))
    return [str(a.type) for a in parsed.arguments.flat_all]


def tensor_returns(op: Any) -> list[bool]:
    """For each value ``op`` returns, whether it is a tensor (``"Tensor"``)."""
    return [str(r.type) == "Tensor" for r in op._schema.returns]
