"""A bench GEMM under ncu: cuBLAS's plain mm (the floor's kernel), the vendor's fused
epilogue where one exists, Inductor, and template choices with the epilogue fused, each run
a few times after a warm-up inside an NVTX range named after it.

    ncu --clock-control none --nvtx --nvtx-include "cublas_mm/" ... python -m bench.profile_gemm
    python -m bench.profile_gemm --shape 4096,11008,4096 --epilogue gelu \\
        --choice cutlass3x_sm90_mm_bf16_aKNN_bf16_coop_128x256x64_c1x1

Defaults: ``relu(a @ b + bias)`` at 8192^3 and each template provider's first (heuristic)
config; ``--choice NAME`` (repeatable) picks choices by name from the full (max-mode)
candidate list instead. With ``--clock-control none`` the SM clock reading shows what the
power limit leaves of the boost clock under a sustained GEMM.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.profile_norms import run_marked

EPILOGUES = {
    "bias_relu": (("add_bias_n", "relu"), lambda acc, bias: torch.relu(acc + bias)),
    "gelu": (("gelu_erf",), lambda acc, bias: F.gelu(acc)),
    "none": ((), lambda acc, bias: acc),
}


def template_runs(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, epilogue: str, names: list[str]
) -> dict[str, Callable[[], None]]:
    """``{range name: fn}`` for the chosen template choices: the choice's name when picked
    by name, else ``<provider>_fused``."""
    from tilefuse import plugin
    from tilefuse_autotune.selection import candidates_for

    spec = plugin.TensorSpec.of
    kinds, _ = EPILOGUES[epilogue]
    steps = tuple(
        plugin.EpilogueStep(k, operand=0) if k == "add_bias_n" else plugin.EpilogueStep(k)
        for k in kinds
    )
    operands = (bias,) if "add_bias_n" in kinds else ()
    ep = plugin.Epilogue(steps, tuple(spec(t) for t in operands), "bfloat16")
    out = torch.empty(a.shape[0], b.shape[1], device=a.device, dtype=a.dtype)
    os.environ["TILEFUSE_AUTOTUNE"] = "max"  # the full candidate list
    inputs = (spec(a), spec(b), *(spec(t) for t in operands))
    runs: dict[str, Callable[[], None]] = {}
    for c in candidates_for("mm", inputs, spec(out), ep):
        key = c.choice.name if names else f"{c.provider}_fused"
        if (c.choice.name in names) if names else key not in runs:
            c.choice.compile()
            runs[key] = lambda ch=c.choice: ch.run(a, b, *operands, out=out)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="8192,8192,8192", help="M,N,K")
    p.add_argument("--epilogue", choices=sorted(EPILOGUES), default="bias_relu")
    p.add_argument("--choice", action="append", default=[], help="a template choice name")
    args = p.parse_args(argv)
    m, n, k = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    s = k**-0.25
    a = (torch.randn(m, k, device="cuda") * s).bfloat16()
    b = (torch.randn(k, n, device="cuda") * s).bfloat16()
    bias = torch.randn(n, device="cuda").bfloat16()
    reference = EPILOGUES[args.epilogue][1]
    compiled = torch.compile(lambda a, b, bias: reference(a @ b, bias))
    runs: dict[str, Callable[[], object]] = {
        "cublas_mm": lambda: torch.mm(a, b),
        "inductor": lambda: compiled(a, b, bias),
    }
    if args.epilogue == "bias_relu":
        runs["cublaslt_bias_relu"] = lambda: torch._addmm_activation(bias, a, b)
    runs.update(template_runs(a, b, bias, args.epilogue, args.choice))
    for name, fn in runs.items():
        print(f"range {name}", file=sys.stderr)
        run_marked(name, fn, (), warmup=20, reps=3)  # 20 calls: clocks settle under load
    return 0


if __name__ == "__main__":
    sys.exit(main())
