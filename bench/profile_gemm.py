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
        for _ in range(20):  # warm-up: clocks settle under sustained load
            fn(*args)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(name)
        for _ in range(3):
            fn(*args)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
