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
sum, prod, max, min, any); argmax/argmin and logsumexp are not.

A variance (``split_moments``: batch norm's statistics) splits as Chan, Golub and
LeVeque's pairwise update: stage 1 gives each piece its sum, its centre ``c_i`` (its
computed mean) and, about that centre, its sum of squared deviations ``m2_i`` and its
sum of deviations ``d_i`` (one read of the input: the later sums read registers). Stage
2 adds the sums (the mean ``mu``), then ``m2_i + (c_i - mu) * (2 d_i + n_i (c_i - mu))``,
which is exact for any centre: ``d_i`` cancels the rounding of ``c_i`` that would
otherwise enter at first order where ``|mean| >> std``. ``mu`` itself, rounded from large
sums there, is off by ``e = sum_i (n_i (c_i - mu) + d_i) / n`` (computed from small
differences): the mean is ``mu + e``, and ``n e**2`` comes off the squared deviations.

Reductions with symbolic sizes are not split: the plan would hold for the example sizes
only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from ...ir.index import unflatten
from ...ir.nodes import Layout, Pointwise, Reduction, product
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


def _stage1_ranges(plan: SplitPlan, kept_sizes: Sequence[Any]) -> tuple[Any, ...]:
    pieces = sympy.Integer(plan.chunks)
    return (pieces, *kept_sizes) if plan.columns else (*kept_sizes, pieces)


def _piece_and_kept(plan: SplitPlan, idx: Sequence[Any]) -> tuple[Any, list[Any]]:
    """A stage-1 index as (piece, kept index)."""
    return (idx[0], list(idx[1:])) if plan.columns else (idx[-1], list(idx[:-1]))


def _stage1_body(
    plan: SplitPlan,
    reduction_sizes: Sequence[Any],
    value_at: Callable[[Sequence[Any], Sequence[Any]], Any],
    fill: Any,
) -> Callable[[Sequence[Any], Sequence[Any]], Any]:
    """Stage 1's reduction body: ``value_at`` of the piece's ``ridx``-th element, ``fill``
    past the end of the last piece. ``value_at(kept, ridx, piece)``."""
    numel = int(product(reduction_sizes))
    padded = plan.chunk * plan.chunks != numel

    def stage1(idx: Sequence[Any], ridx: Sequence[Any]) -> Any:
        piece, kept = _piece_and_kept(plan, idx)
        flat = piece * plan.chunk + ridx[0]

        def element() -> Any:
            return value_at(kept, unflatten(flat, reduction_sizes), piece)

        if not padded:
            return element()
        inside = ops.lt(ops.index_expr(flat, torch.int64), ops.constant(numel, torch.int64))
        return ops.masked(inside, element, fill)

    return stage1


def _stage1(ctx: Any, layout: Layout, plan: SplitPlan, reduction_type: str, body: Any) -> Any:
    chunk = (sympy.Integer(plan.chunk),)
    math = layout.dtype
    return ctx.add_buffer(layout, Reduction(layout.size, chunk, reduction_type, body, math))


def _partial_loader(plan: SplitPlan, buf: Any) -> Callable[[Sequence[Any], Any], Any]:
    """``load(kept, piece)``: one stage-1 partial of ``buf``."""

    def load(kept: Sequence[Any], piece: Any) -> Any:
        at = [piece, *kept] if plan.columns else [*kept, piece]
        return ops.load(buf.name, buf.layout.index(at))

    return load


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
    fill = identity(reduction_type, math_dtype)
    body = _stage1_body(plan, reduction_sizes, lambda k, r, _piece: value_at(k, r), fill)
    layout = Layout.contiguous(device, math_dtype, _stage1_ranges(plan, kept_sizes))
    partial = _partial_loader(plan, _stage1(ctx, layout, plan, reduction_type, body))
    return lambda kept, ridx: partial(kept, ridx[0])


@dataclass(frozen=True)
class SplitMoments:
    """Stage 2 of a split variance, as reduction bodies over ``(kept index, (piece,))``
    (reduction ranges ``(plan.chunks,)``): ``total`` sums the pieces' sums (the mean is
    ``total / n``); ``m2(kept, piece, mean)`` is one piece's term of the sum of squared
    deviations from ``mean`` (the whole reduction's, loaded by the caller), and
    ``offset(kept, piece, mean)`` its term of ``sum(x - mean)``: ``n_i (c_i - mean) + d_i``,
    which is what a rounded ``mean`` is off by, times ``n``."""

    total: Callable[[Sequence[Any], Sequence[Any]], Any]
    m2: Callable[[Sequence[Any], Any, Any], Any]
    offset: Callable[[Sequence[Any], Any, Any], Any]


def split_moments(
    ctx: Any,
    device: torch.device,
    kept_sizes: Sequence[Any],
    reduction_sizes: Sequence[Any],
    value_at: Callable[[Sequence[Any], Sequence[Any]], Any],
    math_dtype: torch.dtype,
    plan: SplitPlan,
) -> SplitMoments:
    """Stage 1 of a split variance (the pieces' sums, centres, and sums of squared and of
    plain deviations) as buffers of ``ctx``; ``value_at`` and the sizes as
    ``split_reduction``."""
    numel = int(product(reduction_sizes))
    last = numel - (plan.chunks - 1) * plan.chunk  # the last piece's elements, >= 1
    ranges1 = _stage1_ranges(plan, kept_sizes)
    layout = Layout.contiguous(device, math_dtype, ranges1)

    def count(piece: Any) -> Any:
        if last == plan.chunk:
            return ops.constant(plan.chunk, math_dtype)
        is_last = ops.eq(
            ops.index_expr(piece, torch.int64), ops.constant(plan.chunks - 1, torch.int64)
        )
        return ops.where(
            is_last, ops.constant(last, math_dtype), ops.constant(plan.chunk, math_dtype)
        )

    elements = _stage1_body(plan, reduction_sizes, lambda k, r, _piece: value_at(k, r), 0)
    sums = _stage1(ctx, layout, plan, "sum", elements)
    piece_sum = _partial_loader(plan, sums)

    def piece_mean_at(idx: Sequence[Any]) -> Any:
        piece, kept = _piece_and_kept(plan, idx)
        return ops.truediv(piece_sum(kept, piece), count(piece))

    means = ctx.add_buffer(layout, Pointwise(layout.size, piece_mean_at))
    piece_mean = _partial_loader(plan, means)

    def deviation2(kept: Sequence[Any], ridx: Sequence[Any], piece: Any) -> Any:
        diff = ops.sub(value_at(kept, ridx), piece_mean(kept, piece))
        return ops.mul(diff, diff)

    def deviation(kept: Sequence[Any], ridx: Sequence[Any], piece: Any) -> Any:
        return ops.sub(value_at(kept, ridx), piece_mean(kept, piece))

    m2s = _stage1(ctx, layout, plan, "sum", _stage1_body(plan, reduction_sizes, deviation2, 0))
    piece_m2 = _partial_loader(plan, m2s)
    ds = _stage1(ctx, layout, plan, "sum", _stage1_body(plan, reduction_sizes, deviation, 0))
    piece_d = _partial_loader(plan, ds)

    def m2(kept: Sequence[Any], piece: Any, mean: Any) -> Any:
        shift = ops.sub(piece_mean(kept, piece), mean)
        d = piece_d(kept, piece)
        cross = ops.add(ops.add(d, d), ops.mul(count(piece), shift))
        return ops.add(piece_m2(kept, piece), ops.mul(shift, cross))

    def offset(kept: Sequence[Any], piece: Any, mean: Any) -> Any:
        shift = ops.sub(piece_mean(kept, piece), mean)
        return ops.add(ops.mul(count(piece), shift), piece_d(kept, piece))

    return SplitMoments(lambda kept, ridx: piece_sum(kept, ridx[0]), m2, offset)
