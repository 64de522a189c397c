"""2D tiling of pointwise groups whose accesses disagree on the contiguous dimension.

``x + x.t()`` reads one operand along rows and the other along columns; a 1D
kernel makes one of them strided. Splitting the space into ``(outer, inner)``
at the dimension where a transposed access is contiguous gives a 2D tile in
which both reads coalesce (Triton moves data between layouts in shared memory).
"""

from __future__ import annotations

import sympy

from ..ir.index import provably_equal, stride_of
from ..ir.nodes import product
from .group import FusedGroup, memory_order, try_build
from .nodes import SchedNode


def choose_tiling(group: FusedGroup, memory_reads: set[str]) -> FusedGroup:
    """``group`` re-placed as a 2D tile when that makes a strided access contiguous."""
    if group.reduction or group.rnumel != 1:
        return group
    first = group.nodes[0]
    ranges = first.ranges
    if len(ranges) < 2:
        return group
    last = first.index_vars[-1]
    order = memory_order(first)
    if order != tuple(range(len(ranges))) and _contiguous_along(group, memory_reads, order):
        return group  # the 1D walk in memory order (``place``) already coalesces
    split = None
    for node in group.nodes:
        if node.ranges != ranges:
            continue
        for _, index in _accesses(node, memory_reads):
            if stride_of(index, node.index_vars[-1]) in (0, 1):
                continue
            for d, var in enumerate(node.index_vars[:-1]):
                if stride_of(index, var) == 1:
                    split = d + 1
    if split is None or last is None:
        return group
    outer = product(ranges[:split])
    inner = product(ranges[split:])
    if provably_equal(inner, 1):
        return group
    tiled, _ = try_build(group.nodes, outer, inner, reduction=False, tiled=True)
    return tiled or group


def _accesses(node: SchedNode, memory_reads: set[str]) -> list[tuple[str, sympy.Expr]]:
    """``node``'s reads that go to memory, and its own store."""
    own_store = (node.name, node.buffer.layout.index(node.index_vars))
    return [(n, i) for n, i in [*node.reads, own_store] if n in memory_reads or n == node.name]


def _contiguous_along(group: FusedGroup, memory_reads: set[str], order: tuple[int, ...]) -> bool:
    """Whether every memory access of the group's first-shape nodes has unit (or zero)
    stride along the innermost dim of ``order``."""
    ranges = group.nodes[0].ranges
    for node in group.nodes:
        if node.ranges != ranges:
            continue
        inner = node.index_vars[order[-1]]
        if any(stride_of(i, inner) not in (0, 1) for _, i in _accesses(node, memory_reads)):
            return False
    return True
