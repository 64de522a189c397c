"""Sweep the split column sum's stage 1 (GPU only): ``python bench/sweep_column_split.py``.

A bias or LayerNorm-weight gradient is a column sum of a ``[tokens, hidden]`` tensor, which
tilefuse splits in two (``split_reduction``): stage 1 sums ``chunks`` pieces of rows for
each tile of columns, stage 2 adds the pieces. This sweeps the column tile (``XBLOCK``,
also the plan's ``COLUMN_TILE``), the rows a loop step reads (``RBLOCK``), the warps and
the plan's target program count, forcing them on stage 1 through the scheduling-policy hook
(``sweep_triton_configs.ForcedTiling``), and prints each config's GPU kernel time per call
(torch.profiler: the sum over both stages, then stage 1 alone), best first. Its output is
what ``heuristics.choose_config``'s column branch and ``split_reduction``'s constants were
tuned on.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.sweep_triton_configs import ForcedTiling  # noqa: E402

CALLS = 50
SHAPES = ((4096, 768, torch.bfloat16), (4096, 3072, torch.bfloat16))
XBLOCKS = (32, 64, 128)
RBLOCKS = (16, 64, 128)
WARPS = (4, 8)
TARGETS = (512, 1024, 2048)


class StageOneTiling(ForcedTiling):
    """Forces ``config`` on reductions over more than ``columns`` outputs (stage 1)."""

    def __init__(self, config: dict, columns: int) -> None:
        super().__init__(config)
        self.columns = columns

    def tiling(self, spec, device):
        if spec.kind.value == "reduction" and int(spec.xnumel) > self.columns:
            return self.config
        return None


def kernel_times(fn, x: torch.Tensor) -> tuple[float, float]:
    """GPU µs per call of ``fn(x)``: all its kernels, and the longest one (stage 1)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            fn(x)
        torch.cuda.synchronize()
    per_kernel = {}
    for event in prof.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.key] = event.device_time_total / CALLS
    return sum(per_kernel.values()), max(per_kernel.values(), default=0.0)


def main() -> int:
    import os

    os.environ["TILEFUSE_CPP_WRAPPER"] = "0"  # kernels are timed: no C++ wrapper builds
    import tilefuse.pipeline as pipeline
    from tilefuse.frontend.lowerings import split_reduction

    for rows, cols, dtype in SHAPES:
        x = torch.randn(rows, cols, device="cuda", dtype=dtype)
        expected = x.float().sum(0)
        results = []
        configs = [None, *itertools.product(XBLOCKS, RBLOCKS, WARPS, TARGETS)]
        for config in configs:
            torch._dynamo.reset()
            if config is None:
                pipeline.active_policy = lambda: None
                label = "heuristic"
            else:
                xb, rb, warps, target = config
                forced = {"XBLOCK": xb, "RBLOCK": rb, "num_warps": warps}
                split_reduction.COLUMN_TILE = xb
                split_reduction.TARGET_PROGRAMS = target
                pipeline.active_policy = lambda f=forced, c=cols: StageOneTiling(f, c)
                label = f"X{xb} R{rb} w{warps} t{target}"
            try:
                compiled = torch.compile(lambda t: t.sum(0), backend="tilefuse")
                got = compiled(x)
                if not torch.allclose(got.float(), expected, rtol=2e-2, atol=1e-1):
                    results.append((float("inf"), 0.0, label + " WRONG"))
                    continue
                total, stage1 = kernel_times(compiled, x)
                results.append((total, stage1, label))
            except Exception as exc:  # a config a kernel cannot take is reported, not fatal
                results.append((float("inf"), 0.0, f"{label} FAILED {type(exc).__name__}"))
        name = f"[{rows}, {cols}] {str(dtype).removeprefix('torch.')}"
        print(f"== {name}: µs per call, all kernels / stage 1")
        for total, stage1, label in sorted(results):
            print(f"{name:22s} {label:28s} {total:7.2f} {stage1:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
