"""The bench's relu(a @ b + bias) 8192^3 bf16 product under ncu: cuBLAS's plain mm (the
floor), cuBLASLt's fused bias+relu (tilefuse's default pick) and Inductor's cuBLAS + Triton
epilogue, each run a few times after a warm-up.

    ncu --clock-control none --metrics ... python -m bench.profile_gemm

With ``--clock-control none`` the SM clock reading shows what the power limit leaves of
the boost clock under a sustained GEMM.
"""

from __future__ import annotations

import sys

import torch

from bench.profile_norms import run_marked
from bench.workloads import gemm_bias_relu


def main() -> int:
    torch.manual_seed(0)
    n = 8192
    s = n**-0.25
    a = (torch.randn(n, n, device="cuda") * s).bfloat16()
    b = (torch.randn(n, n, device="cuda") * s).bfloat16()
    bias = torch.randn(n, device="cuda").bfloat16()
    runs = {
        "cublas_mm": lambda: torch.mm(a, b),
        "cublaslt_bias_relu": lambda: torch._addmm_activation(bias, a, b),
        "inductor": torch.compile(gemm_bias_relu),
    }
    for name, fn in runs.items():
        args = (a, b, bias) if name == "inductor" else ()
        run_marked(name, fn, args, warmup=20, reps=3)  # 20 calls: clocks settle under load
    return 0


if __name__ == "__main__":
    sys.exit(main())
