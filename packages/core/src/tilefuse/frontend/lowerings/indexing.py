"""Indexing lowerings: gather, index_select, embedding, advanced ``index``, and the
one-index-per-row ``scatter`` (a compare, as in the one-hot of a loss's backward).

A loaded index value becomes an index symbol through ``ops.indirect(value, size)``
(negative indices wrap), so the gathered load stays one expression.
"""

from __future__ import annotations

import sympy
import torch

from ...ir.index import provably_equal_all
from ...ir.nodes import product
from ...ir.ops import ops
from ..lowering import Unsupported, register
from ..values import LazyValue, Value
from .common import compute_dtype, loader, out_meta, out_sizes

aten = torch.ops.aten


@register(aten.gather)
def _gather(ctx, node, x, dim, index, sparse_grad=False):
    """``out[i] = x[i with i[dim] replaced by index[i]]``, ``out`` shaped like ``index``.

    Eager also accepts an empty ``index`` of any rank (the output is empty: nothing is
    read, so the body is a typed zero) and treats a 0-d ``x`` or ``index`` as 1-d of one
    element. Any other rank mismatch is declined (``Unsupported``)."""
    dim = dim % max(x.rank, 1)
    new = out_sizes(node)
    if product(new).is_zero:
        return LazyValue(x.dtype, x.device, new, lambda idx: ops.constant(0, x.dtype))
    if x.rank == 0:  # every valid index is 0: the scalar, shaped like the index
        return LazyValue(x.dtype, x.device, new, lambda idx: x.load([]))
    if index.rank == 0 and x.rank == 1:  # a 0-d index picks one element: a 0-d output
        return LazyValue(
            x.dtype, x.device, new, lambda idx: x.load([ops.indirect(index.load([]), x.size[0])])
        )
    if index.rank != x.rank:
        raise Unsupported(
            f"gather of a rank-{index.rank} index into a rank-{x.rank} tensor (eager accepts "
            "this only for an empty or 0-d index)"
        )

    def fn(idx):
        pos = ops.indirect(index.load(idx), x.size[dim])
        src = list(idx)
        src[dim] = pos
        return x.load(src)

    return LazyValue(x.dtype, x.device, new, fn)


@register(aten.index_select)
def _index_select(ctx, node, x, dim, index):
    dim = dim % max(x.rank, 1)
    new = out_sizes(node)
    if x.rank == 0:  # every valid index is 0: the scalar itself
        return LazyValue(x.dtype, x.device, new, lambda idx: x.load([]))

    def fn(idx):
        pos = ops.indirect(index.load([idx[dim]] if index.rank else []), x.size[dim])
        src = list(idx)
        src[dim] = pos
        return x.load(src)

    return LazyValue(x.dtype, x.device, new, fn)


@register(aten.embedding)
def _embedding(ctx, node, weight, indices, padding_idx=-1, *rest):
    new = out_sizes(node)
    k = indices.rank

    def fn(idx):
        row = ops.indirect(indices.load(list(idx[:k])), weight.size[0])
        return weight.load([row, idx[k]])

    return LazyValue(weight.dtype, weight.device, new, fn)


@register(aten.scatter)
def _scatter(ctx, node, x, dim, index, src, reduce=None):
    """``scatter`` (``src`` a tensor or a scalar ``value``) when ``index`` holds one
    position per line along ``dim`` and covers ``x`` elsewhere: every output element is
    ``src`` where its position along ``dim`` equals the line's index, else ``x``'s.

    That is one pointwise compare, so a one-hot of a cross-entropy backward fuses into the
    kernel that reads it instead of a zero fill plus an eager scatter over the whole
    tensor. Any other index shape, and ``reduce``, are declined (the op runs as an
    extern). Like a fused gather, an out-of-range index is not reported: it matches no
    position, so the line keeps ``x``."""
    if reduce is not None:
        raise Unsupported("scatter with reduce")
    if x.rank == 0 or index.rank != x.rank:
        raise Unsupported("scatter of a 0-d tensor or with an index of another rank")
    dim = dim % x.rank
    others = [d for d in range(x.rank) if d != dim]
    if index.size[dim] != 1 or not provably_equal_all(
        [index.size[d] for d in others], [x.size[d] for d in others]
    ):
        raise Unsupported("scatter with more than one index per line, or an index that "
                          "does not cover the tensor")  # fmt: skip
    dtype = out_meta(node).dtype
    math = compute_dtype(dtype)
    if isinstance(src, Value) and src.rank != x.rank:
        raise Unsupported("scatter from a source of another rank")
    load_x, load_src = loader(x, x.size, math), loader(src, x.size, math)

    def fn(idx):
        line = list(idx)
        line[dim] = sympy.Integer(0)
        hit = ops.eq(ops.index_expr(idx[dim], torch.int64), index.load(line))
        return ops.to_dtype(ops.where(hit, load_src(line), load_x(list(idx))), dtype)

    return LazyValue(dtype, x.device, x.size, fn)


def _broadcast_shape(shapes):
    """The broadcast of sizes (expressions; a symbolic size is never 1: Dynamo
    specializes 1), as ``torch.broadcast_shapes`` gives for ints."""
    rank = max(len(s) for s in shapes)
    out = []
    for d in range(rank):
        sizes = [s[len(s) - rank + d] for s in shapes if len(s) - rank + d >= 0]
        out.append(next((s for s in sizes if s != 1), sympy.Integer(1)))
    return tuple(out)


@register(aten.index, aten._unsafe_index)
def _index(ctx, node, x, indices):
    indices = list(indices) + [None] * (x.rank - len(indices))
    present = [i for i, t in enumerate(indices) if t is not None]
    if not present:
        return x
    if any(t.dtype == torch.bool for t in indices if t is not None):
        raise Unsupported("boolean mask indexing has a data-dependent shape")
    meta = out_meta(node)
    new = out_sizes(node)
    bshape = _broadcast_shape([indices[i].size for i in present])
    nb = len(bshape)
    adjacent = present == list(range(present[0], present[-1] + 1))
    start = present[0] if adjacent else 0

    def fn(idx):
        bidx = list(idx[start : start + nb])
        rest = list(idx[:start]) + list(idx[start + nb :])
        src = []
        r = iter(rest)
        for d in range(x.rank):
            t = indices[d]
            if t is None:
                src.append(next(r))
                continue
            tidx = [
                sympy.Integer(0)
                if s == 1 and bshape[nb - t.rank + j] != 1
                else bidx[nb - t.rank + j]
                for j, s in enumerate(t.size)
            ]
            src.append(ops.indirect(t.load(tidx), x.size[d]))
        return x.load(src)

    return LazyValue(meta.dtype, x.device, new, fn)
