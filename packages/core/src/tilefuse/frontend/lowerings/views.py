"""View and layout lowerings: each composes an index mapping, so views cost nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy
import torch

from ...ir.index import FloorDiv, ModularIndexing, flatten, unflatten
from ...ir.nodes import Layout, Template, stride_order, sympify_sizes
from ...ir.ops import ops
from ...ir.symbolic import known_nonnegative, size_expr
from ..lowering import Unsupported, register
from ..values import BufferValue, LazyValue, Value
from .common import compute_dtype, out_meta, out_sizes

aten = torch.ops.aten
Integer = sympy.Integer


def reindex(x: Value, size: Sequence[Any], mapping) -> LazyValue:
    """A view of ``x`` with ``size`` whose element ``idx`` is ``x[mapping(idx)]``."""
    return LazyValue(x.dtype, x.device, tuple(size), lambda idx: x.load(mapping(idx)))


@register(aten.view, aten.reshape, aten._unsafe_view, aten.view_copy)
def _view(ctx, node, x, size, *rest):
    if isinstance(size, torch.dtype) or out_meta(node).dtype != x.dtype:
        raise Unsupported("a view as another dtype reinterprets bits")
    new = out_sizes(node)
    if list(new) == list(x.size):
        return x
    return reindex(x, new, lambda idx: unflatten(flatten(idx, new), x.size))


@register(aten.permute)
def _permute(ctx, node, x, dims):
    dims = [d % x.rank for d in dims]
    inverse = [dims.index(i) for i in range(x.rank)]
    return reindex(
        x, [x.size[d] for d in dims], lambda idx: [idx[inverse[i]] for i in range(x.rank)]
    )


@register(aten.t, aten.transpose)
def _transpose(ctx, node, x, d0=0, d1=1):
    if x.rank < 2:
        return x
    d0, d1 = d0 % x.rank, d1 % x.rank
    perm = list(range(x.rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return reindex(x, [x.size[p] for p in perm], lambda idx: [idx[perm[i]] for i in range(x.rank)])


@register(aten.expand)
def _expand(ctx, node, x, size, *rest):
    new = out_sizes(node)
    lead = len(new) - x.rank

    def mapping(idx):
        return [
            Integer(0) if (s == 1 and new[lead + i] != 1) else idx[lead + i]
            for i, s in enumerate(x.size)
        ]

    return reindex(x, new, mapping)


@register(aten.squeeze, aten.unsqueeze)
def _squeeze(ctx, node, x, *args):
    new = out_sizes(node)
    if list(new) == list(x.size):
        return x
    return reindex(x, new, lambda idx: unflatten(flatten(idx, new), x.size))


def _slice_bound(i: Any, size: Any, default: Any) -> Any:
    """A slice bound clamped into ``[0, size]`` as Python does; ``Unsupported`` when a
    symbolic size leaves it undecided (the slice then runs eagerly)."""
    if i is None:
        return default
    if isinstance(i, int) and size.is_Integer:
        size = int(size)
        return max(0, min(size, i + size if i < 0 else i))
    i = sympy.sympify(i)
    if i.is_Integer and i < 0:
        i = size + i
    elif i.is_Integer and i >= 2**62:  # "to the end" (sys.maxsize)
        return size
    if known_nonnegative(i) and known_nonnegative(size - i):
        return i
    if i.is_Integer and i >= 0 and known_nonnegative(i - size):
        return size
    raise Unsupported(f"slice bound {i} of a symbolic size {size}")


@register(aten.slice)
def _slice(ctx, node, x, dim=0, start=None, end=None, step=1):
    dim = dim % x.rank
    size = x.size[dim]
    start = _slice_bound(start, size, Integer(0))
    new = list(x.size)
    meta = node.meta.get("val")
    if isinstance(meta, torch.Tensor) and meta.dim() == x.rank:
        # The traced output size: Dynamo's own (guarded) answer for symbolic bounds.
        new[dim] = out_sizes(node)[dim]
    else:
        end = _slice_bound(end, size, size)
        length = sympy.sympify(end) - start
        if not known_nonnegative(length):
            if not length.is_Integer:
                raise Unsupported(f"slice [{start}:{end}] of a symbolic size {size}")
            length = Integer(0)
        new[dim] = length if step == 1 else FloorDiv(length + step - 1, step)

    def mapping(idx):
        out = list(idx)
        out[dim] = start + idx[dim] * step
        return out

    return reindex(x, new, mapping)


@register(aten.select)
def _select(ctx, node, x, dim, index):
    dim = dim % x.rank
    index = _line_index(index, x.size[dim])
    new = [s for i, s in enumerate(x.size) if i != dim]
    return reindex(x, new, lambda idx: list(idx[:dim]) + [index] + list(idx[dim:]))


def _whole_epilogue(ctx, x):
    """``x`` realized once when it is a GEMM result with a few ops on it (a fused q/k/v
    projection's bias): its pieces are then strided views of one buffer, whose bias add
    the scheduler can fuse into the GEMM, instead of one copy per piece. Else ``x``."""
    if not isinstance(x, LazyValue) or not 1 < x.cost() <= _EPILOGUE_OPS:
        return x  # a bare view of a buffer (one load) has nothing to realize
    datas = (getattr(ctx.buffer_named(n), "data", None) for n in x.read_names())
    return BufferValue(ctx.realize(x)) if any(isinstance(d, Template) for d in datas) else x


# A GEMM result with at most this many ops on it (a bias add and its casts) is realized
# before it is split (``_whole_epilogue``).
_EPILOGUE_OPS = 8


@register(aten.split, aten.split_with_sizes)
def _split(ctx, node, x, sizes, dim=0):
    x = _whole_epilogue(ctx, x)
    dim = dim % x.rank
    if not isinstance(sizes, (list, tuple)):
        # chunks of one size: eager's outputs (the fake run's) give each piece's length,
        # symbolic ones included (Dynamo guards on how many pieces there are)
        pieces = node.meta.get("val")
        if not isinstance(pieces, (list, tuple)):
            raise Unsupported("split into chunks without the pieces' example values")
        sizes = [size_expr(m.shape[dim]) for m in pieces]
    outs = []
    start = 0
    for s in sizes:
        outs.append(_slice(ctx, node, x, dim, start, start + s, 1))
        start += s
    return tuple(outs)


@register(aten.unbind)
def _unbind(ctx, node, x, dim=0):
    x = _whole_epilogue(ctx, x)
    dim = dim % x.rank
    if not x.size[dim].is_Integer:
        raise Unsupported(f"unbind of a symbolic size {x.size[dim]}")
    return tuple(_select(ctx, node, x, dim, i) for i in range(int(x.size[dim])))


@register(aten.flip)
def _flip(ctx, node, x, dims):
    dims = {d % x.rank for d in dims}

    def mapping(idx):
        return [x.size[d] - 1 - i if d in dims else i for d, i in enumerate(idx)]

    return reindex(x, x.size, mapping)


def _rolled(i: Any, size: int, shift: int) -> Any:
    """The source index of ``i`` after rolling a dimension of ``size`` by ``shift``."""
    back = (-shift) % size
    return i if back == 0 else ModularIndexing(i + back, 1, size)


@register(aten.roll)
def _roll(ctx, node, x, shifts, dims=()):
    """``out[i] = x[(i - shift) mod size]`` per rolled dimension (or over the flattened
    tensor when ``dims`` is empty): an index mapping, like any view."""
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    if any(not s.is_Integer for s in x.size):
        raise Unsupported("roll of a symbolic size")
    if not all(sympy.sympify(s).is_Integer for s in shifts):
        raise Unsupported("roll by a symbolic shift")
    shifts = [int(s) for s in shifts]
    sizes = [int(s) for s in x.size]
    if 0 in sizes:
        return x
    if not dims:
        total = 1
        for s in sizes:
            total *= s
        return reindex(
            x,
            x.size,
            lambda idx: unflatten(_rolled(flatten(idx, x.size), total, shifts[0]), x.size),
        )
    by_dim: dict[int, int] = {}
    for shift, d in zip(shifts, dims):
        d = d % x.rank
        by_dim[d] = by_dim.get(d, 0) + shift

    def mapping(idx):
        return [_rolled(i, sizes[d], by_dim[d]) if d in by_dim else i for d, i in enumerate(idx)]

    return reindex(x, x.size, mapping)


def _masked_load(x: Value, cond_index, idx) -> Any:
    return ops.masked(cond_index, lambda: x.load(idx), 0)


def _bound(value):
    """A bound as a kernel value: a constant, or an index expression when symbolic."""
    value = sympy.sympify(value)
    if value.is_Integer:
        return ops.constant(int(value), torch.int64)
    return ops.index_expr(value, torch.int64)


def _in_range(expr, lo, hi):
    return ops.logical_and(
        ops.ge(ops.index_expr(expr, torch.int64), _bound(lo)),
        ops.lt(ops.index_expr(expr, torch.int64), _bound(hi)),
    )


def _piece_index(index: Any, lo: Any, hi: Any) -> Any:
    """``index - lo``, the index into a concatenation's piece that covers ``[lo, hi)``,
    written as ``(index + k*(hi - lo) - lo) % (hi - lo)`` with the least ``k`` that keeps
    the operand non-negative. Inside the piece the two are equal; outside it (masked lanes)
    the wrapped one stays in the piece, where the plain one went negative. That bound lets
    the index algebra see through the piece's views: a transposed piece of the q/k/v
    gradient reads ``512*i2 + i1``, not divisions of ``768*i1 + i2 - 768``, so its stride
    shows and the kernel gets a 2D tile. Symbolic bounds keep ``index - lo``."""
    lo, hi = sympy.sympify(lo), sympy.sympify(hi)
    length = hi - lo
    if not (lo.is_Integer and length.is_Integer and length > 0 and known_nonnegative(index)):
        return index - lo
    turns = -(-int(lo) // int(length))  # ceil(lo / length)
    return ModularIndexing(index + turns * length - lo, 1, length)


@register(aten.cat)
def _cat(ctx, node, tensors, dim=0):
    """Each output element is a masked load from the input whose slice along ``dim`` holds
    it. Inputs of no elements along ``dim`` (and the legacy 1-d ``(0,)`` tensors eager
    skips at any rank) contribute nothing; when no input has any, the output is empty and
    its body is a typed zero that no element ever reads."""
    meta = out_meta(node)
    tensors = [t for t in tensors if not (t.rank == 1 and t.size[0] == 0 and meta.dim() != 1)]
    dtype = meta.dtype
    if len(tensors) == 1 and tensors[0].dtype == dtype:
        return tensors[0]
    dim = dim % meta.dim()
    new = out_sizes(node)
    pieces = []
    start = 0
    for t in tensors:
        length = t.size[dim]
        if length != 0:
            pieces.append((t, start, start + length))
        start += length
    if not pieces:
        return LazyValue(dtype, tensors[0].device, new, lambda idx: ops.constant(0, dtype))

    wrap = len(pieces) > 1

    def fn(idx):
        result = None
        for t, lo, hi in reversed(pieces):
            shifted = list(idx)
            shifted[dim] = _piece_index(idx[dim], lo, hi) if wrap else idx[dim] - lo
            cond = _in_range(idx[dim], lo, hi)
            val = ops.masked(cond, lambda t=t, s=shifted: ops.to_dtype(t.load(s), dtype), 0)
            result = val if result is None else ops.where(cond, val, result)
        return result

    return LazyValue(dtype, tensors[0].device, new, fn)


@register(aten.slice_scatter)
def _slice_scatter(ctx, node, x, src, dim=0, start=None, end=None, step=1):
    """``x`` with ``x[..., start:end, ...] = src`` along ``dim`` (unit step): a masked load
    of ``src`` inside the slice and of ``x`` outside it, so the zero fill and the add
    around it (a slice's or a rotary embedding's backward) fuse into one kernel instead
    of an eager clone plus a strided copy."""
    if step != 1:
        raise Unsupported(f"slice_scatter with step {step}")
    dim = dim % x.rank
    size = x.size[dim]
    start = _slice_bound(start, size, Integer(0))
    end = _slice_bound(end, size, size)
    dtype = out_meta(node).dtype

    def fn(idx):
        inner = list(idx)
        inner[dim] = idx[dim] - start
        inside = _in_range(idx[dim], start, end)
        return _either(inside, src, inner, x, list(idx), dtype)

    return LazyValue(dtype, x.device, x.size, fn)


@register(aten.select_scatter)
def _select_scatter(ctx, node, x, src, dim, index):
    """``x`` with ``x.select(dim, index) = src``: ``src`` on that line, ``x`` elsewhere."""
    dim = dim % x.rank
    index = _line_index(index, x.size[dim])
    dtype = out_meta(node).dtype

    def fn(idx):
        on_line = ops.eq(ops.index_expr(idx[dim], torch.int64), _bound(index))
        inner = list(idx[:dim]) + list(idx[dim + 1 :])
        return _either(on_line, src, inner, x, list(idx), dtype)

    return LazyValue(dtype, x.device, x.size, fn)


def _line_index(index: Any, size: Any) -> Any:
    """A select index as a non-negative expression (a negative one counts from ``size``).
    A symbolic index is ``Unsupported``: under ``dynamic=True`` an int argument becomes a
    symbol whose sign the size assumptions (every symbol a size of at least 2) would get
    wrong for ``select(1, -1)``."""
    index = sympy.sympify(index)
    if not index.is_Integer:
        raise Unsupported(f"select at a symbolic index {index}")
    return size + index if index < 0 else index


def _either(cond: Any, src: Value, src_idx: Any, x: Value, x_idx: Any, dtype: Any) -> Any:
    """``src[src_idx]`` where ``cond`` holds, else ``x[x_idx]``, each load masked to its
    side (a functionalized slice write reads each element once)."""
    math = compute_dtype(dtype)
    new = ops.masked(cond, lambda: ops.to_dtype(src.load(src_idx), math), 0)
    old = ops.masked(ops.logical_not(cond), lambda: ops.to_dtype(x.load(x_idx), math), 0)
    return ops.to_dtype(ops.where(cond, new, old), dtype)


@register(aten.stack)
def _stack(ctx, node, tensors, dim=0):
    meta = out_meta(node)
    dim = dim % meta.dim()
    new = out_sizes(node)
    dtype = meta.dtype

    def fn(idx):
        result = None
        for k, t in reversed(list(enumerate(tensors))):
            inner = list(idx[:dim]) + list(idx[dim + 1 :])
            cond = ops.eq(ops.index_expr(idx[dim], torch.int64), ops.constant(k, torch.int64))
            val = ops.masked(cond, lambda t=t, s=inner: ops.to_dtype(t.load(s), dtype), 0)
            result = val if result is None else ops.where(cond, val, result)
        return result

    return LazyValue(dtype, tensors[0].device, new, fn)


@register(aten.constant_pad_nd)
def _pad(ctx, node, x, pad, value=0):
    new = out_sizes(node)
    dtype = out_meta(node).dtype
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    for amount in (a for pair in pairs for a in pair):
        # a crop, or a symbol (an int argument under dynamic=True) of unknown sign
        if not (sympy.sympify(amount).is_Integer and int(amount) >= 0):
            raise Unsupported(f"padding by {amount}: only non-negative constants are lowered")

    def fn(idx):
        src = list(idx)
        cond = None
        for i, (before, _after) in enumerate(pairs):
            d = x.rank - 1 - i
            src[d] = idx[d] - before
            c = _in_range(src[d], 0, x.size[d])
            cond = c if cond is None else ops.logical_and(cond, c)
        if cond is None:
            return x.load(src)
        return ops.masked(cond, lambda: x.load(src), value)

    return LazyValue(dtype, x.device, new, fn)


@register(aten.as_strided)
def _as_strided(ctx, node, x, size, stride, storage_offset=None):
    """Offsets count in eager's storage of ``x``. Where ``x``'s buffer is laid out
    otherwise (a realized view stored without eager's gaps or offset, a channels-last
    copy of a contiguous tensor, a value never stored), each offset is decoded into an
    element of ``x`` through eager's layout, which is then read wherever we keep it."""
    meta = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    theirs = Layout.of_tensor(meta) if isinstance(meta, torch.Tensor) else None
    relaid = ctx.relaid.get(x.buffer.name) if isinstance(x, BufferValue) else None
    eager = relaid
    if eager is None and theirs is not None:
        if not isinstance(x, BufferValue) or not _same_strides(x.buffer.layout, theirs):
            eager = theirs
    order = _decode_order(eager) if eager is not None else None
    if order is None and relaid is None:
        # Read in place: eager's strides (or nothing better known); an explicit storage
        # offset counts from x's first element, wherever our buffer starts.
        if not isinstance(x, BufferValue):
            raise Unsupported("as_strided of a computed value")
        layout = x.buffer.layout
        offset = layout.offset
        if storage_offset is not None:
            start = theirs.offset if theirs is not None else layout.offset
            offset = layout.offset + sympify_sizes([storage_offset])[0] - start
        view = Layout(
            layout.device, layout.dtype, sympify_sizes(size), sympify_sizes(stride), offset
        )
        name = x.buffer.name
        return LazyValue(x.dtype, x.device, view.size, lambda idx: ops.load(name, view.index(idx)))
    assert eager is not None
    offset = sympify_sizes([storage_offset])[0] if storage_offset is not None else eager.offset
    view = Layout(eager.device, eager.dtype, sympify_sizes(size), sympify_sizes(stride), offset)

    def fn(idx):
        rest = view.index(idx) - eager.offset
        if order is None:  # channels-last in place of eager's contiguous, symbolic strides
            element = [ModularIndexing(rest, st, n) for st, n in zip(eager.stride, eager.size)]
            return x.load(element)
        element = [Integer(0)] * len(eager.size)
        for d in order:
            element[d] = FloorDiv(rest, eager.stride[d])
            rest = rest - element[d] * eager.stride[d]
        return x.load(element)

    return LazyValue(x.dtype, x.device, view.size, fn)


def _same_strides(a: Layout, b: Layout) -> bool:
    """Whether layouts ``a`` and ``b`` step alike along every dim of more than one."""
    return all(n == 1 or sympy.expand(s - t) == 0 for n, s, t in zip(a.size, a.stride, b.stride))


def _decode_order(layout: Layout) -> list[int] | None:
    """The dims that an offset into ``layout`` decodes to, outermost first (size-1 and
    stride-0 dims are index 0), or ``None`` where that is not one element: a symbolic
    stride, or dims that overlap."""
    order = stride_order(layout.size, layout.stride)
    if order is None:
        return None
    order = [d for d in order if layout.stride[d] != 0]
    for outer, inner in zip(order, order[1:]):
        extent = layout.size[inner] * layout.stride[inner]
        if not sympy.sympify(extent).is_Integer or int(layout.stride[outer]) < int(extent):
            return None
    return order


@register(aten.repeat)
def _repeat(ctx, node, x, repeats):
    new = out_sizes(node)
    lead = len(new) - x.rank

    def fn(idx):
        return x.load(
            [
                ModularIndexing(idx[lead + i], 1, x.size[i]) if x.size[i] != 1 else Integer(0)
                for i in range(x.rank)
            ]
        )

    return LazyValue(x.dtype, x.device, new, fn)
