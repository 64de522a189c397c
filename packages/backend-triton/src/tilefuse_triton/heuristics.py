"""Block sizes and warps for generated kernels: the backend's own heuristics.

A scheduling policy's ``tiling(group, device)`` result overrides these keys.
"""

from __future__ import annotations

from typing import Any

import sympy

from tilefuse.ir.index import stride_of
from tilefuse.scheduler.group import RSYM, XSYM, FusedGroup, simplified

PERSISTENT_MAX_R = 8192


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _reduction_reads_contiguous_in_x(group: FusedGroup) -> bool:
    """True when memory reads of the reductions walk ``x`` contiguously (column sums)."""
    for node in group.nodes:
        if node.kind != "reduction":
            continue
        placement = group.placements[node.name]
        for name, index in node.reads:
            if name in group.placements:
                continue
            expr = simplified(index.subs(placement.mapping, simultaneous=True), group)
            if stride_of(expr, XSYM) == 1 and stride_of(expr, RSYM) not in (0, 1):
                return True
    return False


def choose_config(group: FusedGroup) -> dict[str, Any]:
    x = int(group.xnumel)
    r = int(group.rnumel)
    big = x * max(r, 1) >= 2**31 - 1
    if not group.reduction and not group.tiled:
        # H100 sweep (bench/sweep_triton_configs.py): 2048 elements over 4 warps beat
        # 1024/4 (91.7% vs 86.8% of copy bandwidth on gelu(x + b), bf16 16384x8192).
        block = min(2048, next_pow2(max(x, 1)))
        return {"XBLOCK": block, "RBLOCK": 1, "num_warps": 4 if block >= 512 else 2, "int64": big}
    if group.tiled:
        xb = min(64, next_pow2(x))
        rb = min(64, next_pow2(r))
        paired = xb == rb and -(-x // xb) == -(-r // rb)
        return {"XBLOCK": xb, "RBLOCK": rb, "num_warps": 4, "int64": big, "paired": paired}
    rp = next_pow2(max(r, 1))
    if _reduction_reads_contiguous_in_x(group):
        # Column reductions: 32 columns x 128 rows a step, 8 warps (94% vs 86% for 64x64 on
        # an fp32 8192x16384 column sum in the H100 sweep).
        xb = min(32, next_pow2(x))
        rb = min(128, rp)
        return {"XBLOCK": xb, "RBLOCK": rb, "num_warps": 8, "persistent": False, "int64": big}
    if rp <= PERSISTENT_MAX_R:
        xb = max(1, min(next_pow2(x), 4096 // rp if rp <= 4096 else 1, 64))
        warps = 8 if rp >= 2048 else (4 if rp >= 256 else 2)
        return {"XBLOCK": xb, "RBLOCK": rp, "num_warps": warps, "persistent": True, "int64": big}
    return {"XBLOCK": 1, "RBLOCK": 2048, "num_warps": 8, "persistent": False, "int64": big}


def grid(group: FusedGroup, config: dict[str, Any]) -> int:
    x = int(group.xnumel)
    r = int(group.rnumel)
    xblocks = -(-x // config["XBLOCK"])
    if group.tiled:
        return xblocks * -(-r // config["RBLOCK"])
    return xblocks


__all__ = ["choose_config", "grid", "next_pow2", "sympy"]
