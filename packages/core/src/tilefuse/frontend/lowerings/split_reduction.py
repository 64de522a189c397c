"""Split reductions: a long reduction with few outputs, lowered as two reductions.

A reduction kernel runs one program per output. With few outputs and a long reduction
(``x.sum()`` of 2**26 elements; batch norm's per-channel sums over N*H*W) that leaves
most of a GPU idle. ``split_plan`` decides whether to split and how; ``split_reduction``
builds the two stages, both ordinary ``Reduction`` nodes, so no backend renders anything
new:

- stage 1 cuts each output's reduction (its elements in the row-major order of the
  reduced dims) into ``chunks`` contiguous pieces of ``chunk`` elements, one program per
  (output, piece), and writes the partial results to a temporary buffer of
  ``(*kept sizes, chunks)`` in the reduction's math dtype (float32 for half inputs);
  elements past the end of the last piece read as the reduction's identity;
- stage 2 reduces the ``chunks`` partials of each output: it is the original reduction's
  output buffer, to which epilogues and consumers fuse as before.

Column reductions (the input read contiguously along the kept dims, strided along the
reduced ones: a bias gradient's sum over rows) run one program per tile of
``COLUMN_TILE`` outputs, so they are judged by those tiles, not by outputs: 768 columns
are 24 programs. Their stage 1 is laid out ``(chunks, *kept sizes)``, so that each
program's reads stay contiguous along the kept dims.

Only reductions whose partials combine with the same reduction are split (``IDENTITY``:
sum, prod, max, min, any); argmax/argmin and logsumexp are not. Reductions with symbolic
sizes are not split: the plan would hold for the example sizes only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from ...ir.index import unflatten
from ...ir.nodes import Layout, Reduction, product
from ...ir.ops import ops

# More outputs than this already give a GPU enough programs: such reductions stay whole.
MAX_OUTPUTS = 256
# Stage 1 aims at this many programs (outputs * chunks): a few per streaming multiprocessor.
TARGET_PROGRAMS = 1024
# Each stage-1 program reduces at least this many elements, so that stage 2 (and the
# partials' round trip through memory) stays small against stage 1.
MIN_CHUNK = 4096
# A program reducing fewer elements than this (one output, or one column tile) takes
# about as long as a kernel launch: splitting it would add a launch to save less. A
# softmax over 67 rows of 20000 stays one fused kernel; BN's 64 sums of 200K do not.
MIN_PROGRAM_ELEMENTS = 32768
# Chunks are a multiple of this many elements, so each program's first element is as
# aligned as the tensor's (vector loads of a contiguous input stay possible).
CHUNK_ALIGN = 16
# Outputs one program of a column reduction covers (the Triton backend's column tile).
COLUMN_TILE = 32


@dataclass(frozen=True)
class SplitPlan:
    """Stage 1 reduces ``chunks`` pieces of ``chunk`` elements per output:
    ``(chunks - 1) * chunk < numel <= chunks * chunk``, so no piece is all padding;
    ``chunk`` is a multiple of ``CHUNK_ALIGN``."""

    chunks: int
    chunk: int
    columns: bool = False  # stage 1 laid out (chunks, *kept): a column reduction's


def split_plan(outputs: int, numel: int, columns: bool = False) -> SplitPlan | None:
    """How to split a reduction of ``numel`` elements for each of ``outputs`` outputs, or
    ``None`` when it should stay one reduction (many programs already, each program's
    work under ``MIN_PROGRAM_ELEMENTS``, or too short to cut into at least two pieces of
    ``MIN_CHUNK`` elements per program). ``columns``: a
    column reduction, whose programs each take ``COLUMN_TILE`` outputs."""
    tile = COLUMN_TILE if columns else 1
    programs = -(-outputs // tile)
    if outputs < 1 or programs > MAX_OUTPUTS:
        return None
    if numel * min(tile, outputs) < MIN_PROGRAM_ELEMENTS:
        return None
    min_chunk = -(-MIN_CHUNK // min(tile, outputs))
    chunks = min(TARGET_PROGRAMS // programs, numel // min_chunk)
    if chunks < 2:
        return None
    chunk = -(-numel // chunks)
    chunk = -(-chunk // CHUNK_ALIGN) * CHUNK_ALIGN
    chunks = -(-numel // chunk)  # rounding `chunk` up may leave the last pieces empty
    if chunks < 2:
        return None
    return SplitPlan(chunks, chunk, columns)


def identity(reduction_type: str, dtype: torch.dtype) -> Any:
    """The value that leaves ``reduction_type`` unchanged in ``dtype``, or ``None`` when
    the reduction is not split (its partials do not combine with itself)."""
    if reduction_type == "sum":
        return 0
    if reduction_type == "prod":
        return 1
    if reduction_type == "any":
        return False
    if reduction_type in ("max", "min"):
        if dtype.is_floating_point:
            return float("-inf") if reduction_type == "max" else float("inf")
        if dtype == torch.bool:
            return reduction_type == "min"
        info = torch.iinfo(dtype)
        return info.min if reduction_type == "max" else info.max
    return None


def plan_for(
    ranges: Sequence[Any],
    reduction_ranges: Sequence[Any],
    reduction_type: str,
    columns: bool = False,
) -> SplitPlan | None:
    """``split_plan`` for a reduction of these sizes and type, ``None`` where it does not
    apply: a type with no ``identity``, or a size that is not a known integer."""
    if reduction_type not in ("sum", "prod", "any", "max", "min"):
        return None
    sizes = [*ranges, *reduction_ranges]
    if not all(isinstance(s, sympy.Expr) and s.is_Integer for s in map(sympy.sympify, sizes)):
        return None
    return split_plan(int(product(ranges)), int(product(reduction_ranges)), columns)


def split_reduction(
    ctx: Any,
    device: torch.device,
    kept_sizes: Sequence[Any],
    reduction_sizes: Sequence[Any],
    reduction_type: str,
    value_at: Callable[[Sequence[Any], Sequence[Any]], Any],
    math_dtype: torch.dtype,
    plan: SplitPlan,
) -> Callable[[Sequence[Any], Sequence[Any]], Any]:
    """Stage 1 as a buffer of ``ctx``; returns stage 2's reduction body over
    ``(kept index, (partial,))`` (reduction ranges ``(plan.chunks,)``).

    ``value_at(kept_index, reduction_index)`` is the element being reduced, already in
    ``math_dtype``; ``kept_sizes`` and ``reduction_sizes`` are the sizes of the kept and
    reduced dims.
    """
    numel = int(product(reduction_sizes))
    chunk, chunks = plan.chunk, plan.chunks
    padded = chunk * chunks != numel
    fill = identity(reduction_type, math_dtype)

    def stage1(idx: Sequence[Any], ridx: Sequence[Any]) -> Any:
        piece, kept = (idx[0], list(idx[1:])) if plan.columns else (idx[-1], list(idx[:-1]))
        flat = piece * chunk + ridx[0]

        def element() -> Any:
            return value_at(kept, unflatten(flat, reduction_sizes))

        if not padded:
            return element()
        inside = ops.lt(ops.index_expr(flat, torch.int64), ops.constant(numel, torch.int64))
        return ops.masked(inside, element, fill)

    pieces = sympy.Integer(chunks)
    ranges1 = (pieces, *kept_sizes) if plan.columns else (*kept_sizes, pieces)
    layout = Layout.contiguous(device, math_dtype, ranges1)
    partials = ctx.add_buffer(
        layout,
        Reduction(layout.size, (sympy.Integer(chunk),), reduction_type, stage1, math_dtype),
    )

    def stage2(kept: Sequence[Any], ridx: Sequence[Any]) -> Any:
        at = [ridx[0], *kept] if plan.columns else [*kept, ridx[0]]
        return ops.load(partials.name, layout.index(at))

    return stage2
