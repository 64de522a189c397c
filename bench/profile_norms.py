"""Run layer_norm and rms_norm once under Inductor and once under tilefuse, for ncu.

    ncu --metrics ... python bench/profile_norms.py

Each backend's kernels run after a warm-up call, bracketed by NVTX ranges named after the
backend, so an ncu report tells the two apart (``--nvtx --print-nvtx-rename kernel``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench.workloads import rms_norm


def main() -> int:
    torch.manual_seed(0)
    x = torch.randn(16384, 8192, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, device="cuda", dtype=torch.bfloat16)
    cases = {
        "layer_norm": (lambda x, w, b: F.layer_norm(x, (8192,), w, b, eps=1e-5), (x, w, b)),
        "rms_norm": (rms_norm, (x, w)),
    }
    for name, (fn, args) in cases.items():
        for backend in ("inductor", "tilefuse"):
            torch._dynamo.reset()
            compiled = torch.compile(fn, backend=backend)
            with torch.no_grad():
                run_marked(f"{name}/{backend}", compiled, args, warmup=1, reps=1)
    return 0


def run_marked(name: str, fn, args: tuple, *, warmup: int, reps: int) -> None:
    """``warmup`` unmarked calls, then ``reps`` calls inside the NVTX range ``name``."""
    for _ in range(warmup):
        fn(*args)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(name)
    for _ in range(reps):
        fn(*args)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()


if __name__ == "__main__":
    sys.exit(main())
