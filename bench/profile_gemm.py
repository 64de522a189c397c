"""The bench's relu(a @ b + bias) 8192^3 bf16 product under ncu: cuBLAS's plain mm (the
floor), cuBLASLt's fused bias+relu (tilefuse's default pick), Inductor's cuBLAS + Triton
epilogue, and the first (heuristic) config of each installed GEMM template provider with
the epilogue fused (CUTLASS, Triton), each run a few times after a warm-up.

    ncu --clock-control none --nvtx --nvtx-include "cublas_mm/" ... python -m bench.profile_gemm

With ``--clock-control none`` the SM clock reading shows what the power limit leaves of
the boost clock under a sustained GEMM.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from bench.profile_norms import run_marked
from bench.workloads import gemm_bias_relu


def template_runs(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> dict[str, Any]:
    """``{"<provider>_fused": fn}``: each provider's first choice for mm + bias + relu."""
    from tilefuse import plugin
    from tilefuse_autotune.selection import candidates_for

    spec = plugin.TensorSpec.of
    epilogue = plugin.Epilogue(
        (plugin.EpilogueStep("add_bias_n", operand=0), plugin.EpilogueStep("relu")),
        (spec(bias),),
        "bfloat16",
    )
    out = torch.empty_like(a)
    runs: dict[str, Callable[[], None]] = {}
    for candidate in candidates_for("mm", (spec(a), spec(b), spec(bias)), spec(out), epilogue):
        name = f"{candidate.provider}_fused"
        if name in runs:
            continue  # only each provider's first (heuristic) config
        candidate.choice.compile()
        print(f"{name} = {candidate.choice.name}", file=sys.stderr)
        runs[name] = lambda c=candidate.choice: c.run(a, b, bias, out=out)
    return runs


def main() -> int:
    torch.manual_seed(0)
    n = 8192
    s = n**-0.25
    a = (torch.randn(n, n, device="cuda") * s).bfloat16()
    b = (torch.randn(n, n, device="cuda") * s).bfloat16()
    bias = torch.randn(n, device="cuda").bfloat16()
    compiled = torch.compile(gemm_bias_relu)
    runs = {
        "cublas_mm": lambda: torch.mm(a, b),
        "cublaslt_bias_relu": lambda: torch._addmm_activation(bias, a, b),
        "inductor": lambda: compiled(a, b, bias),
        **template_runs(a, b, bias),
    }
    for name, fn in runs.items():
        run_marked(name, fn, (), warmup=20, reps=3)  # 20 calls: clocks settle under load
    return 0


if __name__ == "__main__":
    sys.exit(main())
