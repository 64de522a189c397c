"""The kernel families every CI run compiles with nvcc: each schedule, layout, op and
epilogue node kind appears in at least one (four compiles in all, run in parallel)."""

from __future__ import annotations

from tests.backend_cuda.cases import Case, make_case
from tilefuse_cuda.configs import GemmConfig

FAMILIES: dict[str, tuple[GemmConfig, Case]] = {
    # RowBroadcast + SrcFetch (residual as C); row-major everything; bf16.
    "coop_mm_bias_gelu_residual": (
        GemmConfig("cooperative", (128, 128, 64), (1, 1)),
        make_case(
            "mm", 256, 128, 64,
            steps=(("add_bias_n", "n"), ("gelu_erf",), ("add_matrix", "mn")),
        ),
    ),
    # ColBroadcast + scale; column-major A, B and D; fp16 in, fp32 out; batched (L mode).
    "ping_bmm_colmajor_bias_m_silu_f32": (
        GemmConfig("pingpong", (64, 128, 64), (1, 1)),
        make_case(
            "bmm", 64, 128, 64, batch=2, dtype="float16", a_col=True, b_col=True, d_col=True,
            out_dtype="float32", steps=(("add_bias_m", "m"), ("silu",), ("mul_scalar", 0.5)),
        ),
    ),
    # addmm's [N] bias and every remaining unary; 2x1 cluster.
    "coop_addmm_unaries_cluster2": (
        GemmConfig("cooperative", (256, 128, 64), (2, 1)),
        make_case(
            "addmm", 256, 128, 64,
            steps=(("gelu_tanh",), ("sigmoid",), ("tanh",), ("relu",)),
        ),
    ),
    # No epilogue (the cast-only tree); column-major A; 2x1 cluster.
    "ping_mm_plain_cluster2": (
        GemmConfig("pingpong", (128, 128, 64), (2, 1)),
        make_case("mm", 128, 128, 64, a_col=True),
    ),
}  # fmt: skip
