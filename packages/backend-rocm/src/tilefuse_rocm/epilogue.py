"""Render a structured ``tilefuse.plugin.Epilogue`` into HIP C++ statements.

The generated code updates a float variable ``x`` (the fp32 accumulator of one output
element at row ``m``, column ``n``, batch ``bz``) in place, exactly as
``Epilogue.apply_reference`` defines each step. Operand ``i`` is read through
``args.ops[i]`` with the broadcast strides ``args.s_ops[i][0..2]``.
"""

from __future__ import annotations

import math

from tilefuse import plugin

from .hip_types import dtype_info

# Step kind -> statement on ``x``. Add steps are filled in by ``render_step``.
_UNARY = {
    # ``x < 0 ? 0 : x`` keeps NaN, like torch.relu (fmaxf would turn NaN into 0).
    "relu": "x = (x < 0.0f) ? 0.0f : x;",
    "gelu_erf": "x = x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f));",
    "gelu_tanh": (
        "x = x * 0.5f * (1.0f + tanhf(0.79788456080286535588f * (x + 0.044715f * x * x * x)));"
    ),
    "silu": "x = x / (1.0f + expf(-x));",
    "sigmoid": "x = 1.0f / (1.0f + expf(-x));",
    "tanh": "x = tanhf(x);",
}
_ADDS = ("add_bias_n", "add_bias_m", "add_matrix")


def check_epilogue(epilogue: plugin.Epilogue) -> plugin.Verdict:
    """Whether every step of ``epilogue`` can be rendered; never raises."""
    for i, step in enumerate(epilogue.steps):
        if step.kind in _ADDS:
            if step.operand is None or not 0 <= step.operand < len(epilogue.operands):
                return plugin.Verdict.no(f"epilogue step {i} ({step.kind}) has no valid operand")
        elif step.kind == "mul_scalar":
            value = 1.0 if step.value is None else float(step.value)
            if not math.isfinite(value):
                return plugin.Verdict.no(f"epilogue step {i}: mul_scalar by {value} not rendered")
        elif step.kind not in _UNARY:
            return plugin.Verdict.no(f"epilogue step {i}: kind {step.kind!r} is not rendered")
    return plugin.Verdict.yes()


def render_step(index: int, step: plugin.EpilogueStep, epilogue: plugin.Epilogue) -> str:
    """One step as a commented C++ statement (the comment names the step: tests rely on it)."""
    head = f"/* epilogue step {index}: {step.kind} */ "
    if step.kind in _ADDS:
        assert step.operand is not None
        op = step.operand
        info = dtype_info(epilogue.operands[op].dtype)
        ptr = f"static_cast<const {info.storage}*>(args.ops[{op}])"
        offset = f"bz * args.s_ops[{op}][0] + m * args.s_ops[{op}][1] + n * args.s_ops[{op}][2]"
        return head + f"x += {info.load(f'{ptr}[{offset}]')};"
    if step.kind == "mul_scalar":
        value = 1.0 if step.value is None else float(step.value)
        # A hex literal is exact; the reference multiplies the fp32 value by float(value).
        return head + f"x = x * static_cast<float>({value.hex()}); /* {value!r} */"
    return head + _UNARY[step.kind]


def render_epilogue(epilogue: plugin.Epilogue) -> list[str]:
    """All steps of ``epilogue`` in order, one statement each (empty for no steps)."""
    verdict = check_epilogue(epilogue)
    if not verdict:
        raise ValueError(verdict.reason)
    return [render_step(i, s, epilogue) for i, s in enumerate(epilogue.steps)]
