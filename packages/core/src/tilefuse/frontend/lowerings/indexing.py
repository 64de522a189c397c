"""Indexing lowerings: gather, index_select, embedding, advanced ``index``.

A loaded index value becomes an index symbol through ``ops.indirect(value, size)``
(negative indices wrap), so the gathered load stays one expression.
"""

from __future__ import annotations

import sympy
import torch

from ...ir.nodes import product
from ...ir.ops import ops
from ..lowering import Unsupported, register
from ..values import LazyValue
from .common import out_meta, out_sizes

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
