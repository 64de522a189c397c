"""Shared problem builders for the ROCm backend tests."""

from __future__ import annotations

from tilefuse import plugin
from tilefuse_rocm.gemm_spec import GemmProblem

DTYPES = ("float32", "float16", "bfloat16")
LAYOUTS = (("row", "row"), ("row", "col"), ("col", "row"), ("col", "col"))
UNARY_KINDS = ("relu", "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh")


def spec(shape: tuple[int, ...], dtype: str = "float32") -> plugin.TensorSpec:
    stride = []
    acc = 1
    for size in reversed(shape):
        stride.append(acc)
        acc *= size
    return plugin.TensorSpec(tuple(shape), tuple(reversed(stride)), dtype, "cuda:0")


def epilogues(op: str, dtype: str) -> list[plugin.Epilogue]:
    """Every step kind alone, plus a chain with every operand kind and an output dtype."""
    bmm = op == "bmm"
    out_shape = (2, 8, 16) if bmm else (8, 16)
    bias_m = (2, 8, 1) if bmm else (8, 1)
    result = [plugin.Epilogue()]
    result += [plugin.Epilogue(steps=(plugin.EpilogueStep(k),)) for k in UNARY_KINDS]
    result.append(plugin.Epilogue(steps=(plugin.EpilogueStep("mul_scalar", value=0.125),)))
    result.append(
        plugin.Epilogue(
            steps=(
                plugin.EpilogueStep("add_bias_n", operand=0),
                plugin.EpilogueStep("add_bias_m", operand=1),
                plugin.EpilogueStep("mul_scalar", value=-1.5),
                plugin.EpilogueStep("add_matrix", operand=2),
                plugin.EpilogueStep("gelu_tanh"),
                plugin.EpilogueStep("relu"),
            ),
            operands=(spec((16,), dtype), spec(bias_m, "float32"), spec(out_shape, "bfloat16")),
            out_dtype=dtype,
        )
    )
    return result


def problem(
    op: str, dtype: str, layouts: tuple[str, str], epilogue: plugin.Epilogue
) -> GemmProblem:
    return GemmProblem(
        op=op,
        a_dtype=dtype,
        b_dtype=dtype,
        out_dtype=dtype,
        a_layout=layouts[0],
        b_layout=layouts[1],
        bias_dtype=dtype if op == "addmm" else None,
        epilogue=epilogue,
    )
