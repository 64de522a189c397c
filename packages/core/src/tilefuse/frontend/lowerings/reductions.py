"""Reduction lowerings: sum, mean, prod, amax/amin, argmax/argmin, any/all, var/std,
softmax, logsumexp, layer_norm (log_softmax decomposes: ``decompositions.log_softmax``).
Each produces ``Reduction`` nodes plus lazy pointwise math that the scheduler fuses into
the same kernel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.fx

from ... import plugin
from ...ir.index import simplify_index, stride_of
from ...ir.nodes import Layout, Reduction, index_symbols, product
from ...ir.ops import ops, trace_reads
from ..lowering import Unsupported, register
from ..values import BufferValue, LazyValue, Value
from .common import compute_dtype, out_meta, size_value
from .split_reduction import plan_for, split_moments, split_reduction

aten = torch.ops.aten


def _dims(x: Value, dims: Any) -> list[int]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(x.rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({d % max(x.rank, 1) for d in dims})


@dataclass(frozen=True)
class _Shape:
    """How a reduction of ``x`` over ``dims`` indexes: the kept dims, the output ``ranges``
    (size 1 at reduced dims with ``keepdim``), the reduced ``rranges``, ``value_at(kept
    index, reduced index)`` (the element in the math dtype, pre-mapped), ``kept_of(output
    index)``, and whether the input is read as columns (``_reads_columns``)."""

    kept: list[int]
    ranges: tuple[Any, ...]
    rranges: tuple[Any, ...]
    value_at: Callable[[Sequence[Any], Sequence[Any]], Any]
    kept_of: Callable[[Sequence[Any]], list[Any]]
    columns: bool

    def kept_sizes(self, x: Value) -> list[Any]:
        return [x.size[d] for d in self.kept]


def _shape(
    x: Value,
    dims: Sequence[int],
    keepdim: bool,
    math_dtype: torch.dtype,
    map_fn: Callable[[Any, list[Any]], Any] | None = None,
) -> _Shape:
    kept = [d for d in range(x.rank) if d not in dims]
    if keepdim:
        ranges = tuple(sympy.Integer(1) if d in dims else x.size[d] for d in range(x.rank))
    else:
        ranges = tuple(x.size[d] for d in kept)
    rranges = tuple(x.size[d] for d in dims) or (sympy.Integer(1),)

    def value_at(kept_idx: Sequence[Any], ridx: Sequence[Any]) -> Any:
        full: list[Any] = [sympy.Integer(0)] * x.rank
        for d, i in zip(kept, kept_idx):
            full[d] = i
        for d, r in zip(dims, ridx):
            full[d] = r
        v = x.load(full)
        if x.dtype != math_dtype:
            v = ops.to_dtype(v, math_dtype)
        return map_fn(v, full) if map_fn else v

    def kept_of(idx: Sequence[Any]) -> list[Any]:
        return [idx[d] for d in kept] if keepdim else list(idx)

    columns = bool(kept) and not product(rranges).is_zero
    columns = columns and _reads_columns(value_at, [x.size[d] for d in kept], rranges)
    return _Shape(kept, ranges, rranges, value_at, kept_of, columns)


def reduce(
    ctx: Any,
    x: Value,
    dims: Sequence[int],
    keepdim: bool,
    reduction_type: str,
    out_dtype: torch.dtype,
    math_dtype: torch.dtype,
    map_fn: Callable[[Any, list[Any]], Any] | None = None,
) -> Value | None:
    """A ``Reduction`` buffer of ``x`` over ``dims``; ``map_fn(value, index)`` pre-maps.

    A long reduction with few outputs becomes two (``split_reduction``) where
    ``ctx.splits_reductions`` allows it; the buffer returned is the second's. A
    ``softmax_sum``, which is never split, returns ``None`` where a ``sum`` of the same
    shape would be: the caller lowers the sum instead. Every other type returns a value.
    """
    if x.rank == 0:
        dims = []
    shape = _shape(x, dims, keepdim, math_dtype, map_fn)
    ranges, rranges = shape.ranges, shape.rranges
    if product(rranges).is_zero:  # nothing to reduce: every output is the identity
        empty = {"sum": 0, "prod": 1, "any": False, "logsumexp": float("-inf"), "softmax_sum": 0}
        if reduction_type not in empty:
            raise Unsupported(f"{reduction_type} of an empty dimension has no identity")
        value = empty[reduction_type]
        return LazyValue(out_dtype, x.device, ranges, lambda idx: ops.constant(value, out_dtype))

    element: Callable[[Sequence[Any], Sequence[Any]], Any] = shape.value_at
    if reduction_type == "softmax_sum" and dims and ctx.splits_reductions(x.device):
        if plan_for(ranges, rranges, "sum", shape.columns) is not None:
            return None  # a few long rows: split sums fill the GPU, one pass would not
    plan = _split(ctx, x, dims, shape, reduction_type)
    if plan is not None:
        element = split_reduction(
            ctx, x.device, shape.kept_sizes(x), rranges, reduction_type, shape.value_at,
            math_dtype, plan,
        )  # fmt: skip
        rranges = (sympy.Integer(plan.chunks),)

    def body(idx: Sequence[Any], ridx: Sequence[Any]) -> Any:
        return element(shape.kept_of(idx), ridx)

    layout = Layout.contiguous(x.device, out_dtype, ranges)
    reduction = Reduction(ranges, rranges, reduction_type, body, math_dtype)
    return BufferValue(ctx.add_buffer(layout, reduction))


def _split(ctx: Any, x: Value, dims: Sequence[int], shape: _Shape, reduction_type: str):
    """The ``SplitPlan`` for this reduction where ``ctx`` splits reductions on its device."""
    if not dims or product(shape.rranges).is_zero:
        return None
    plan = plan_for(shape.ranges, shape.rranges, reduction_type, shape.columns)
    return plan if plan is not None and ctx.splits_reductions(x.device) else None


def _reads_columns(
    value_at: Callable[[Sequence[Any], Sequence[Any]], Any],
    kept_sizes: Sequence[Any],
    reduced_sizes: Sequence[Any],
) -> bool:
    """Whether the reduction reads some input contiguously along its last kept dim and
    strided along its last reduced one (a column sum), as the backend's column tiles do.
    Indices are simplified over the dims' sizes first: a reshape's // and % (a bias
    gradient summing ``grad.view(-1, C)`` over its rows) hide the strides otherwise."""
    kept_syms = index_symbols("k", len(kept_sizes))
    reduced_syms = index_symbols("q", len(reduced_sizes))
    tracer = trace_reads(value_at, kept_syms, reduced_syms)
    ranges = dict(zip([*kept_syms, *reduced_syms], [*kept_sizes, *reduced_sizes], strict=True))
    for _name, raw in tracer.reads:
        index = simplify_index(raw, ranges)
        across = stride_of(index, reduced_syms[-1])
        if stride_of(index, kept_syms[-1]) == 1 and across is not None and across not in (0, 1):
            return True
    return False


def _count(x: Value, dims: Sequence[int]) -> Any:
    """Elements reduced over ``dims`` (one for a 0-d ``x``, whose dim 0 is itself)."""
    return product([x.size[d] for d in dims if d < x.rank])


def _lazy_map(value: Value, fn: Callable[[Any], Any], dtype: torch.dtype) -> LazyValue:
    return LazyValue(dtype, value.device, value.size, lambda idx: fn(value.load(idx)))


@register(aten.sum)
def _sum(ctx, node, x, dims=None, keepdim=False, *, dtype=None):
    out_dtype = out_meta(node).dtype
    math = compute_dtype(out_dtype)
    if out_dtype == torch.bool:
        math = torch.int64
    d = _dims(x, dims)
    source = _softmax_sum_source(node, d)
    if source is not None and ctx.reductions_render(x.device, plugin.CAP_SOFTMAX_SUM):
        # sum(exp(v - amax(v))): the backend computes it next to that amax, one read
        value = reduce(ctx, ctx.value_of(source), d, keepdim, "softmax_sum", out_dtype, math)
        if value is not None:
            return value
    return reduce(ctx, x, d, keepdim, "sum", out_dtype, math)


def _softmax_sum_source(node: torch.fx.Node, dims: Sequence[int]) -> torch.fx.Node | None:
    """``v`` where ``node`` is ``sum(exp(v - amax(v, dims, keepdim=True)), dims)`` over
    float32 or float64 values (log_softmax's decomposition), else ``None``. Half types
    are left to the separate ops: eager rounds ``v - amax`` and its ``exp`` to 16 bits,
    which one reduction in float32 would not."""
    exp = node.args[0]
    if not (isinstance(exp, torch.fx.Node) and exp.target is aten.exp.default):
        return None
    sub = exp.args[0]
    if not (isinstance(sub, torch.fx.Node) and sub.target is aten.sub.Tensor) or sub.kwargs:
        return None
    if len(sub.args) != 2:
        return None
    v, mx = sub.args
    if not (isinstance(mx, torch.fx.Node) and mx.target is aten.amax.default):
        return None
    if mx.args[0] is not v or mx.kwargs or len(mx.args) != 3 or mx.args[2] is not True:
        return None
    meta = v.meta.get("val") if isinstance(v, torch.fx.Node) else None
    if not isinstance(meta, torch.Tensor) or meta.dtype not in (torch.float32, torch.float64):
        return None
    rank = max(meta.dim(), 1)
    max_dims = [mx.args[1]] if isinstance(mx.args[1], int) else list(mx.args[1])
    if sorted({d % rank for d in max_dims} or range(rank)) != sorted(dims):
        return None
    return v


@register(aten.prod)
def _prod(ctx, node, x, dim=None, keepdim=False, *, dtype=None):
    out_dtype = out_meta(node).dtype
    return reduce(ctx, x, _dims(x, dim), keepdim, "prod", out_dtype, compute_dtype(out_dtype))


@register(aten.mean)
def _mean(ctx, node, x, dims=None, keepdim=False, *, dtype=None):
    out_dtype = out_meta(node).dtype
    math = compute_dtype(out_dtype)
    d = _dims(x, dims)
    total = reduce(ctx, x, d, keepdim, "sum", math, math)
    n = _count(x, d)
    return _lazy_map(
        total, lambda v: ops.to_dtype(ops.truediv(v, size_value(n, math)), out_dtype), out_dtype
    )


def _minmax(kind: str):
    def lower(ctx, node, x, dims=None, keepdim=False):
        out_dtype = out_meta(node).dtype
        # bools reduce as int8 (0/1): backends need no bool max/min identity
        math = torch.int8 if out_dtype == torch.bool else compute_dtype(out_dtype)
        return reduce(ctx, x, _dims(x, dims), keepdim, kind, out_dtype, math)

    return lower


register(aten.amax)(_minmax("max"))
register(aten.amin)(_minmax("min"))


def _arg(kind: str):
    def lower(ctx, node, x, dim=None, keepdim=False):
        if dim is None:
            if x.rank > 1:
                src = x
                x = LazyValue(
                    src.dtype, src.device, (product(src.size),),
                    lambda i: src.load(_unflat(i[0], src.size)),
                )  # fmt: skip
            dims = [0] if x.rank else []
        else:
            dims = [dim % max(x.rank, 1)]
        return reduce(ctx, x, dims, keepdim if dim is not None else False, kind,
                      torch.int64, compute_dtype(x.dtype))  # fmt: skip

    return lower


def _unflat(i: Any, sizes: Sequence[Any]) -> list[Any]:
    from ...ir.index import unflatten

    return unflatten(i, sizes)


register(aten.argmax)(_arg("argmax"))
register(aten.argmin)(_arg("argmin"))


def _as_node_dtype(node: Any, value: Value) -> Value:
    """A bool result cast to the node's dtype: ``any``/``all`` of uint8 give uint8."""
    out_dtype = out_meta(node).dtype
    if out_dtype == torch.bool:
        return value
    return _lazy_map(value, lambda v: ops.to_dtype(v, out_dtype), out_dtype)


@register(aten.any)
def _any(ctx, node, x, dims=None, keepdim=False):
    found = reduce(ctx, x, _dims(x, dims), keepdim, "any", torch.bool, torch.bool)
    return _as_node_dtype(node, found)


@register(aten.all)
def _all(ctx, node, x, dims=None, keepdim=False):
    anynot = reduce(ctx, x, _dims(x, dims), keepdim, "any", torch.bool, torch.bool,
                    map_fn=lambda v, idx: ops.logical_not(v))  # fmt: skip
    return _as_node_dtype(node, _lazy_map(anynot, ops.logical_not, torch.bool))


def _correction(correction: Any, unbiased: Any) -> float:
    if correction is not None:
        return float(correction)
    if unbiased is None:
        return 1.0
    return 1.0 if unbiased else 0.0


def mean_and_m2(ctx, x: Value, dims: Sequence[int], keepdim: bool, math: torch.dtype):
    """The mean and the sum of squared deviations from it, over ``dims``.

    Two passes, fused: a rough mean (the sum over the count), then the squared deviations
    about it and their plain sum, which corrects both (``_corrected``). In one kernel when
    the row fits (the second pass reads registers, not memory). A long reduction with few
    outputs splits (``split_moments``) and still reads ``x`` once.
    """
    n = _count(x, dims)
    if x.rank:
        shape = _shape(x, dims, True, math)
        plan = _split(ctx, x, dims, shape, "sum")
        if plan is not None:
            mean_v, m2 = _split_mean_and_m2(ctx, x, shape, n, math, plan)
            return _squeezed(mean_v, x, dims, keepdim), _squeezed(m2, x, dims, keepdim), n
    total = reduce(ctx, x, dims, True, "sum", math, math)
    rough = _rough_mean(ctx, total, n, math)

    def diff(v, full):
        return ops.sub(v, rough.load([sympy.Integer(0) if d in dims else full[d]
                                      for d in range(x.rank)]))  # fmt: skip

    m2_rough = reduce(ctx, x, dims, True, "sum", math, math,
                      map_fn=lambda v, full: ops.mul(diff(v, full), diff(v, full)))  # fmt: skip
    off = reduce(ctx, x, dims, True, "sum", math, math, map_fn=diff)
    mean_v, m2 = _corrected(ctx, x.device, rough, m2_rough, off, n, math)
    return _squeezed(mean_v, x, dims, keepdim), _squeezed(m2, x, dims, keepdim), n


def _rough_mean(ctx, total: Value, n: Any, math: torch.dtype) -> BufferValue:
    """``total / n`` realized: the mean before ``_corrected`` fixes its rounding."""
    mean = _lazy_map(total, lambda v: ops.truediv(v, size_value(n, math)), math)
    return BufferValue(ctx.realize(mean))


def _corrected(ctx, device, rough: Value, m2_rough: Value, off: Value, n: Any, math):
    """The mean and the sum of squared deviations, from those about a ``rough`` mean
    (``m2_rough``) and the deviations' plain sum ``off``. Where ``|mean| >> std`` the
    rough mean is rounded from large sums and off by ``e = off / n``: the mean is
    ``rough + e`` (``rough`` where ``e`` is NaN: an infinite input), and ``n * e**2``
    comes off the squared deviations, never below 0 (a NaN stays NaN)."""

    def count():
        return size_value(n, math)

    def mean_at(idx):
        e = ops.truediv(off.load(idx), count())
        return ops.where(ops.isnan(e), rough.load(idx), ops.add(rough.load(idx), e))

    def m2_at(idx):
        d = off.load(idx)
        m2 = ops.sub(m2_rough.load(idx), ops.truediv(ops.mul(d, d), count()))
        return ops.maximum(m2, ops.constant(0.0, math))

    mean = BufferValue(ctx.realize(LazyValue(math, device, rough.size, mean_at)))
    return mean, LazyValue(math, device, rough.size, m2_at)


def _split_mean_and_m2(ctx, x: Value, shape: _Shape, n: Any, math: torch.dtype, plan):
    """``mean_and_m2`` with ``keepdim`` as two split stages (``split_moments``)."""
    stage2 = split_moments(
        ctx, x.device, shape.kept_sizes(x), shape.rranges, shape.value_at, math, plan
    )
    pieces = (sympy.Integer(plan.chunks),)
    layout = Layout.contiguous(x.device, math, shape.ranges)

    def stage2_sum(body):
        reduction = Reduction(layout.size, pieces, "sum", body, math)
        return BufferValue(ctx.add_buffer(layout, reduction))

    summed = stage2_sum(lambda idx, ridx: stage2.total(shape.kept_of(idx), ridx))
    rough = _rough_mean(ctx, summed, n, math)

    def m2(idx, ridx):
        return stage2.m2(shape.kept_of(idx), ridx[0], rough.load(idx))

    def offset(idx, ridx):
        return stage2.offset(shape.kept_of(idx), ridx[0], rough.load(idx))

    return _corrected(ctx, x.device, rough, stage2_sum(m2), stage2_sum(offset), n, math)


def _squeezed(value: Value, x: Value, dims: Sequence[int], keepdim: bool) -> Value:
    """``value`` (sizes of ``x`` with 1 at ``dims``) without those dims unless ``keepdim``."""
    if keepdim:
        return value
    kept = [d for d in range(x.rank) if d not in dims]

    def squeezed(idx):
        full = [sympy.Integer(0)] * x.rank
        for d, i in zip(kept, idx):
            full[d] = i
        return value.load(full)

    return LazyValue(value.dtype, x.device, tuple(x.size[d] for d in kept), squeezed)


@register(aten.var, aten.std, aten.var_mean, aten.std_mean)
def _var(ctx, node, x, dims=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(unbiased, (list, tuple)) or (
        unbiased is not None and not isinstance(unbiased, bool)
    ):
        dims, unbiased = unbiased, None  # var(x, dim, ...) overloads
    packet = node.target.overloadpacket
    metas = node.meta["val"]
    out_dtype = (metas[0] if isinstance(metas, (list, tuple)) else metas).dtype
    math = compute_dtype(out_dtype)
    d = _dims(x, dims)
    mean, m2, n = mean_and_m2(ctx, x, d, keepdim, math)
    corr = _correction(correction, unbiased)

    def finish(v):
        denom = ops.maximum(
            ops.sub(size_value(n, math), ops.constant(corr, math)), ops.constant(0, math)
        )
        var = ops.truediv(v, denom)
        if packet in (aten.std, aten.std_mean):
            var = ops.sqrt(var)
        return ops.to_dtype(var, out_dtype)

    result = _lazy_map(m2, finish, out_dtype)
    if packet in (aten.var_mean, aten.std_mean):
        return result, _lazy_map(mean, lambda v: ops.to_dtype(v, out_dtype), out_dtype)
    return result


@register(aten._softmax)
def _softmax(ctx, node, x, dim, half_to_float=False):
    out_dtype = out_meta(node).dtype
    math = compute_dtype(out_dtype if not half_to_float else torch.float32)
    d = [dim % max(x.rank, 1)] if x.rank else []
    row = ctx.hint(product([x.size[k] for k in d])) if d else 1
    if row > ONLINE_SOFTMAX_MIN_ROW and _rounds_to_half(out_dtype, math):
        return _softmax_online(ctx, node, x, d, math, out_dtype)
    mx = reduce(ctx, x, d, True, "max", math, math)

    def shifted(idx):
        v = x.load(idx)
        v = ops.to_dtype(v, math)
        return ops.sub(v, mx.load([sympy.Integer(0) if k in d else i for k, i in enumerate(idx)]))

    exp_v = LazyValue(math, x.device, x.size, lambda idx: ops.exp(shifted(idx)))
    total = reduce(ctx, exp_v, d, True, "sum", math, math)

    def at_row(idx):
        return total.load([sympy.Integer(0) if k in d else i for k, i in enumerate(idx)])

    if _rounds_to_half(out_dtype, math):
        # One exact reciprocal per row, then a product per element: within an ulp of
        # float32's quotient, which the rounding to 16 bits absorbs (a division per
        # element was a third of the attention softmax's instructions).
        fn = lambda idx: ops.to_dtype(  # noqa: E731
            ops.mul(exp_v.load(idx), ops.reciprocal(at_row(idx))), out_dtype
        )
    else:
        fn = lambda idx: ops.to_dtype(ops.truediv(exp_v.load(idx), at_row(idx)), out_dtype)  # noqa: E731
    return LazyValue(out_dtype, x.device, x.size, fn)


def _rounds_to_half(out_dtype: torch.dtype, math: torch.dtype) -> bool:
    """Whether a float32 result is stored as float16/bfloat16."""
    return math == torch.float32 and out_dtype in (torch.float16, torch.bfloat16)


# Rows longer than this use the one-pass log-sum-exp reduction: a row that does not
# fit in registers is then read once for the statistics instead of twice. Only for a
# float16/bfloat16 result: ``exp(x - (max + log(sum)))`` rounds ``log(sum)`` next to a
# large max (a 2.7e-4 relative error at logits near 1e4), which 16-bit results absorb
# and float32 ones would show.
ONLINE_SOFTMAX_MIN_ROW = 4096


def _softmax_online(ctx, node, x, d, math, out_dtype):
    lse = reduce(ctx, x, d, True, "logsumexp", math, math)

    def row_lse(idx):
        # The reduction is torch.logsumexp's: +inf for a row holding +inf, where eager's
        # softmax of that row is NaN; a NaN here makes every element of the row NaN.
        v = lse.load([sympy.Integer(0) if k in d else i for k, i in enumerate(idx)])
        return ops.where(
            ops.eq(v, ops.constant(float("inf"), math)), ops.constant(float("nan"), math), v
        )

    def fn(idx):
        v = ops.to_dtype(x.load(idx), math)
        return ops.to_dtype(ops.exp(ops.sub(v, row_lse(idx))), out_dtype)

    return LazyValue(out_dtype, x.device, x.size, fn)


@register(aten.logsumexp)
def _logsumexp(ctx, node, x, dims, keepdim=False):
    out_dtype = out_meta(node).dtype
    math = compute_dtype(out_dtype)
    lse = reduce(ctx, x, _dims(x, dims), keepdim, "logsumexp", math, math)
    if out_dtype == math:
        return lse
    return _lazy_map(lse, lambda v: ops.to_dtype(v, out_dtype), out_dtype)


@register(aten.native_layer_norm)
def _layer_norm(ctx, node, x, normalized_shape, weight, bias, eps):
    out_meta_t, mean_meta, rstd_meta = node.meta["val"]
    out_dtype = out_meta_t.dtype
    math = compute_dtype(out_dtype)
    k = len(normalized_shape)
    dims = list(range(x.rank - k, x.rank))
    mean, m2, n = mean_and_m2(ctx, x, dims, True, math)
    rstd = ctx.realize(
        _lazy_map(
            m2,
            lambda v: ops.rsqrt(
                ops.add(ops.truediv(v, size_value(n, math)), ops.constant(eps, math))
            ),
            math,
        )
    )
    rstd_v = BufferValue(rstd)

    def fn(idx):
        row = [sympy.Integer(0) if d in dims else i for d, i in enumerate(idx)]
        v = ops.to_dtype(x.load(idx), math)
        y = ops.mul(ops.sub(v, mean.load(row)), rstd_v.load(row))
        tail = list(idx[x.rank - k :])
        if weight is not None:
            y = ops.mul(y, ops.to_dtype(weight.load(tail), math))
        if bias is not None:
            y = ops.add(y, ops.to_dtype(bias.load(tail), math))
        return ops.to_dtype(y, out_dtype)

    out = LazyValue(out_dtype, x.device, x.size, fn)
    if mean_meta.dtype != math:
        raise Unsupported("layer_norm statistics dtype")
    return out, mean, rstd_v
