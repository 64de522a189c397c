"""Block sizes and warps for generated kernels: the backend's own heuristics.

A scheduling policy's ``tiling(spec, device)`` result overrides these keys.

For a symbolic spec (``spec.symbolic``) the sizes are the hints, and every choice must
hold for any size: indices are 64-bit (an int32 index overflows at some size), a
reduction over a symbolic extent loops over ``r`` (a persistent one needs the whole row
in one block), and a tiled kernel's square-grid pairing is off (it needs as many tiles
along ``x`` as along ``r``).
"""

from __future__ import annotations

from typing import Any

import sympy

from tilefuse import plugin
from tilefuse.plugin import GroupKind, KernelSpec, Level, R, X

PERSISTENT_MAX_R = 8192


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _reduction_reads_contiguous_in_x(spec: KernelSpec) -> bool:
    """True when memory reads of the reductions walk ``x`` contiguously (column sums)."""
    members = set(spec.names)
    for member in spec.members:
        if member.level is not Level.REDUCED:
            continue
        for name, index in member.reads:
            if name in members:
                continue
            if plugin.stride_of(index, X) == 1 and plugin.stride_of(index, R) not in (0, 1):
                return True
    return False


def _one_sum(spec: KernelSpec) -> bool:
    """Whether the kernel's only reduction is a sum (a mean of squares, say)."""
    kinds = [m.reduction_type for m in spec.members if m.level is Level.REDUCED]
    return kinds == ["sum"]


def choose_config(spec: KernelSpec, row_length: int | None = None) -> dict[str, Any]:
    """The backend's own ``XBLOCK``, ``RBLOCK``, ``num_warps``, plus ``int64`` (64-bit
    indices), ``persistent`` (reductions) and ``paired`` (tiled pointwise) for ``spec``.

    ``row_length``: for a reduction over a symbolic extent, the config of a variant that
    serves rows of at most this many elements (``row_variants``), chosen as for a static
    row of that length; without it, one that serves every length (looped)."""
    x = spec.hint(spec.xnumel)
    r = row_length if row_length is not None else spec.hint(spec.rnumel)
    symbolic_x = not sympy.sympify(spec.xnumel).is_Integer
    symbolic_r = row_length is None and not sympy.sympify(spec.rnumel).is_Integer
    big = x * max(r, 1) >= 2**31 - 1 or spec.symbolic
    if spec.kind is GroupKind.POINTWISE:
        # H100 sweep (bench/sweep_triton_configs.py): 2048 elements over 4 warps beat
        # 1024/4 (91.7% vs 86.8% of copy bandwidth on gelu(x + b), bf16 16384x8192).
        block = min(2048, next_pow2(max(x, 1)))
        return {"XBLOCK": block, "RBLOCK": 1, "num_warps": 4 if block >= 512 else 2, "int64": big}
    if spec.kind is GroupKind.POINTWISE_2D:
        xb = min(64, next_pow2(x))
        rb = min(64, next_pow2(r))
        paired = xb == rb and -(-x // xb) == -(-r // rb) and not (symbolic_x or symbolic_r)
        return {"XBLOCK": xb, "RBLOCK": rb, "num_warps": 4, "int64": big, "paired": paired}
    rp = next_pow2(max(r, 1))
    if _reduction_reads_contiguous_in_x(spec):
        # Column reductions: 32 columns x 128 rows a step, 8 warps (94% vs 86% for 64x64 on
        # an fp32 8192x16384 column sum in the H100 sweep).
        xb = min(32, next_pow2(x))
        rb = min(128, rp)
        return {"XBLOCK": xb, "RBLOCK": rb, "num_warps": 8, "persistent": False, "int64": big}
    if symbolic_r:
        rb = min(2048, max(16, rp))
        xb = max(1, min(next_pow2(x), 4096 // rb, 64))
        warps = 8 if rb >= 2048 else (4 if rb >= 256 else 2)
        return {"XBLOCK": xb, "RBLOCK": rb, "num_warps": warps, "persistent": False, "int64": big}
    if rp >= 8192 and rp <= PERSISTENT_MAX_R and _one_sum(spec):
        # H200 sweep, rms_norm bf16 16384x8192: two passes over the row (the second an L2
        # hit, ``kernel_writer.hint_rereads``) on 16 warps reached 96.6% of copy bandwidth,
        # the best persistent config 94.9%; with two reductions (layer_norm) persistent wins.
        return {"XBLOCK": 1, "RBLOCK": 2048, "num_warps": 16, "persistent": False, "int64": big}
    if rp <= PERSISTENT_MAX_R:
        xb = max(1, min(next_pow2(x), 4096 // rp if rp <= 4096 else 1, 64))
        # H200 sweep, bf16 16384x8192: a row of 8192 over 4 warps reached 93.9% of copy
        # bandwidth on layer_norm (8 warps: 87.7%; rms_norm 93.1% against 93.8%).
        warps = 4 if rp >= 8192 else (8 if rp >= 2048 else (4 if rp >= 256 else 2))
        return {"XBLOCK": xb, "RBLOCK": rp, "num_warps": warps, "persistent": True, "int64": big}
    return {"XBLOCK": 1, "RBLOCK": 2048, "num_warps": 8, "persistent": False, "int64": big}


def row_variants(spec: KernelSpec) -> bool:
    """Whether ``spec`` is a row reduction over a symbolic extent, which runs a variant
    per bucket of its row length (``choose_config(spec, bucket)``) instead of one looped
    kernel: a softmax row of 512 in one persistent block took 86 us where the looped
    kernel configured for a first call's 128 took 222 (the H200, ``bench/dynamic.py``)."""
    return (
        spec.kind is GroupKind.REDUCTION
        and not sympy.sympify(spec.rnumel).is_Integer
        and not _reduction_reads_contiguous_in_x(spec)
    )


def grid(spec: KernelSpec, config: dict[str, Any]) -> int:
    """Programs to launch for ``spec`` (with static sizes) under ``config``."""
    return grid_size(spec.kind, int(spec.xnumel), int(spec.rnumel), config)


def grid_size(kind: GroupKind, x: int, r: int, config: dict[str, Any]) -> int:
    """Programs to launch for a kernel of ``kind`` over extents ``x`` and ``r``."""
    xblocks = -(-x // config["XBLOCK"])
    if kind is GroupKind.POINTWISE_2D:
        return xblocks * -(-r // config["RBLOCK"])
    return xblocks


__all__ = ["choose_config", "grid", "grid_size", "next_pow2", "row_variants"]
