"""What a GEMM template instance computes, derived from the op's ``TensorSpec``s.

``GemmProblem.of(op, inputs, layout, epilogue)`` validates the request through
``plugin.GemmShape`` (op, inputs, ranks, dtypes, sizes, broadcasting), checks what
is particular to this template (A and B of one dtype, the epilogue steps) and
returns the sizes, dtype and, for every tensor the epilogue reads (addmm's bias
first, then ``epilogue.operands``), how it broadcasts over the output tile. It
raises ``tilefuse.errors.Unsupported`` with a reason otherwise; the provider
turns that into "no choices" (a direct ``render_gemm`` call lets it propagate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tilefuse import plugin
from tilefuse.errors import Unsupported

OPS = tuple(plugin.GEMM_OPS)
FLOAT_DTYPES = plugin.GEMM_FLOAT_DTYPES
OPERAND_STEPS = ("add_bias_n", "add_bias_m", "add_matrix")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class GemmProblem:
    """One GEMM as the template sees it.

    ``batch`` is 1 for ``mm``/``addmm``. ``extra_patterns`` has one entry per
    tensor read by the epilogue, in launch order (addmm's bias, then the
    epilogue operands): ``"n"`` (varies along columns only, e.g. a ``[N]``
    bias), ``"m"`` (along rows only, ``[M, 1]``) or ``"mn"`` (a full tile).
    ``steps`` are the epilogue steps with addmm's bias prepended as an
    ``add_*`` step on extra tensor 0; operand indexes refer to extra tensors.
    ``index_64`` is set when one matrix spans more elements than int32 offsets
    can address.
    """

    op: str
    m: int
    n: int
    k: int
    batch: int
    dtype: str
    out_dtype: str
    extra_patterns: tuple[str, ...]
    steps: tuple[plugin.EpilogueStep, ...]
    index_64: bool

    @classmethod
    def of(
        cls,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> GemmProblem:
        shape = plugin.GemmShape.of(op, inputs, layout, epilogue)
        a, b = shape.a, shape.b
        if a.dtype != b.dtype:
            raise Unsupported(f"inputs must share one of {FLOAT_DTYPES}; got {a.dtype}, {b.dtype}")
        extras = shape.extras
        steps = _steps(op, epilogue, shape.bias)
        patterns = tuple(_pattern(spec, layout.shape) for spec in extras)
        index_64 = any(_span(s) > _INT32_MAX for s in (a, b, layout, *extras))
        return cls(
            op,
            shape.m,
            shape.n,
            shape.k,
            shape.batch,
            a.dtype,
            layout.dtype,
            patterns,
            steps,
            index_64,
        )


def _steps(
    op: str, epilogue: plugin.Epilogue, bias: plugin.TensorSpec | None
) -> tuple[plugin.EpilogueStep, ...]:
    """The epilogue as the template renders it; raises ``Unsupported`` for what it cannot."""
    shift = 1 if bias is not None else 0
    steps = []
    if bias is not None:
        steps.append(plugin.EpilogueStep("add_matrix", operand=0))
    for step in epilogue.steps:
        if step.kind not in plugin.EPILOGUE_KINDS:
            raise Unsupported(f"epilogue step {step.kind!r} is not one of {plugin.EPILOGUE_KINDS}")
        if step.kind in OPERAND_STEPS:
            if step.operand is None or not 0 <= step.operand < len(epilogue.operands):
                raise Unsupported(f"epilogue step {step} names no operand")
            step = plugin.EpilogueStep(step.kind, operand=step.operand + shift)
        if step.kind == "mul_scalar" and step.value is not None and not math.isfinite(step.value):
            raise Unsupported(f"mul_scalar by {step.value} cannot be written as a literal")
        steps.append(step)
    return tuple(steps)


def expanded_strides(spec: plugin.TensorSpec, out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides of ``spec`` broadcast to ``out_shape`` (0 where broadcast), as torch.expand gives.

    Raises ``Unsupported`` when the shapes do not broadcast.
    """
    if len(spec.shape) > len(out_shape):
        raise Unsupported(f"operand {spec.shape} has more dims than the output {out_shape}")
    pad = len(out_shape) - len(spec.shape)
    strides = [0] * pad
    for size, stride, target in zip(spec.shape, spec.stride, out_shape[pad:], strict=True):
        if size == target:
            strides.append(stride if size != 1 else 0)
        elif size == 1:
            strides.append(0)
        else:
            raise Unsupported(f"operand {spec.shape} does not broadcast to {tuple(out_shape)}")
    return tuple(strides)


def _pattern(spec: plugin.TensorSpec, out_shape: Sequence[int]) -> str:
    stride_m, stride_n = expanded_strides(spec, out_shape)[-2:]
    if stride_m == 0:
        return "n"
    if stride_n == 0:
        return "m"
    return "mn"


def _span(spec: plugin.TensorSpec) -> int:
    """The largest element offset inside one tensor (its batch dim excluded for 3-d)."""
    dims = list(zip(spec.shape, spec.stride, strict=True))[-2:]
    return sum((size - 1) * abs(stride) for size, stride in dims if size > 0)
