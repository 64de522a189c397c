"""Sweep Triton block configs for the memory-bound workloads (GPU only).

Uses the public scheduling-policy hook (``SchedulingPolicy.tiling``) to force a
config on every generated kernel of a workload, times each with
``triton.testing.do_bench`` and prints % of the copy-bandwidth floor. Its output
is what the backend's heuristics (``tilefuse_triton.heuristics``) were tuned on.

    python bench/sweep_triton_configs.py [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
import triton.testing

from tilefuse import plugin


class ForcedTiling:
    name = "sweep"
    api_version = plugin.API_VERSION

    def __init__(self, config: dict) -> None:
        self.config = config

    def uuid(self) -> str:
        return "sweep-" + json.dumps(self.config, sort_keys=True)

    def rank_fusions(self, candidates):
        return candidates

    def tiling(self, spec: plugin.KernelSpec, device: str):
        return self.config.get(spec.kind.value)


def workloads():
    dev = "cuda"
    bf = torch.bfloat16
    x = torch.randn(16384, 8192, device=dev, dtype=bf)
    b = torch.randn(8192, device=dev, dtype=bf)
    sq = torch.randn(8192, 8192, device=dev)
    col = torch.randn(8192, 16384, device=dev)
    logits = torch.randn(8192, 32000, device=dev)
    target = torch.randint(0, 32000, (8192,), device=dev)
    nb = x.numel() * 2
    return {
        "bias_gelu": (lambda x, b: F.gelu(x + b), (x, b), 2 * nb + 2 * 8192),
        "transpose_add": (lambda s: s + s.t(), (sq,), 3 * sq.numel() * 4),
        "column_sum": (lambda c: c.sum(0), (col,), col.numel() * 4 + 16384 * 4),
        "cross_entropy": (
            lambda lg, t: F.cross_entropy(lg, t),
            (logits, target),
            logits.numel() * 4,
        ),
        "softmax": (lambda x: torch.softmax(x, -1), (x,), 2 * nb),
        "layer_norm": (
            lambda x, w, b: F.layer_norm(x, (8192,), w, b),
            (x, b.clone(), b),
            2 * nb + 4 * 8192,
        ),
        "rms_norm": (_rms_norm, (x, b), 2 * nb + 2 * 8192),
    }


def _rms_norm(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)


def _row_norm_configs():
    persistent = [(1, 8192, w, True) for w in (4, 8, 16, 32)] + [(2, 8192, 16, True)]
    looped = [(1, r, w, False) for r, w in [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (2048, 16)]]
    return [
        {"reduction": {"XBLOCK": a, "RBLOCK": r, "num_warps": w, "persistent": p}}
        for a, r, w, p in persistent + looped
    ]


CONFIGS = {
    "bias_gelu": [
        {"pointwise": {"XBLOCK": xb, "num_warps": w}}
        for xb, w in [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (8192, 8), (4096, 16), (512, 4)]
    ],
    "transpose_add": [
        {"pointwise-2d": {"XBLOCK": a, "RBLOCK": r, "num_warps": w}}
        for a, r, w in [
            (64, 64, 4),
            (64, 64, 8),
            (32, 128, 4),
            (128, 32, 4),
            (128, 128, 8),
            (64, 128, 8),
            (32, 32, 4),
            (128, 64, 8),
            (32, 64, 4),
            (64, 32, 4),
            (32, 32, 2),
            (64, 64, 16),
        ]
    ],
    "column_sum": [
        {"reduction": {"XBLOCK": a, "RBLOCK": r, "num_warps": w, "persistent": False}}
        for a, r, w in [
            (64, 64, 8),
            (32, 128, 8),
            (32, 64, 4),
            (16, 256, 8),
            (128, 32, 8),
            (64, 32, 4),
            (32, 256, 8),
        ]
    ],
    "cross_entropy": [
        {"reduction": {"XBLOCK": a, "RBLOCK": r, "num_warps": w, "persistent": False}}
        for a, r, w in [
            (1, 2048, 8),
            (1, 2048, 16),
            (1, 4096, 8),
            (1, 4096, 16),
            (1, 1024, 4),
            (2, 2048, 8),
            (1, 8192, 16),
            (4, 1024, 8),
        ]
    ],
    "softmax": [
        {"reduction": {"XBLOCK": a, "RBLOCK": 8192, "num_warps": w, "persistent": True}}
        for a, w in [(1, 4), (1, 8), (1, 16), (2, 16), (1, 32), (2, 8), (2, 4)]
    ],
    "layer_norm": _row_norm_configs(),
    "rms_norm": _row_norm_configs(),
}


def main() -> int:
    import tilefuse.pipeline as cg

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    copy_src = torch.empty(2**28, device="cuda")
    copy_dst = torch.empty_like(copy_src)
    bw = (
        2
        * copy_src.numel()
        * 4
        / (triton.testing.do_bench(lambda: copy_dst.copy_(copy_src)) * 1e-3)
    )
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s")
    for name, (fn, inputs, nbytes) in workloads().items():
        if only and name not in only:
            continue
        for config in [None] + CONFIGS[name]:
            cg.active_policy = (lambda c=config: ForcedTiling(c)) if config else (lambda: None)
            torch._dynamo.reset()
            try:
                compiled = torch.compile(fn, backend="tilefuse")
                compiled(*inputs)
                ms = triton.testing.do_bench(lambda c=compiled, a=inputs: c(*a))
                pct = nbytes / (ms * 1e-3) / bw * 100
                print(
                    f"{name:15s} {json.dumps(config) if config else 'heuristic':90s} "
                    f"{ms:8.4f} ms {pct:5.1f}%",
                    flush=True,
                )
            except Exception as exc:  # a config a kernel cannot take is reported, not fatal
                print(f"{name:15s} {json.dumps(config)} FAILED {type(exc).__name__}: {exc}"[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
