"""Tensor-creating lowerings: full, scalar_tensor, arange/iota, empty."""

from __future__ import annotations

import sympy
import torch

from ...ir.ops import ops
from ..lowering import register
from ..values import LazyValue
from .common import out_meta, out_sizes, size_value

aten = torch.ops.aten


@register(
    aten.full,
    aten.scalar_tensor,
    aten.full_like,
    aten.zeros,
    aten.ones,
    aten.zeros_like,
    aten.ones_like,
)
def _full(ctx, node, *args, **kwargs):
    meta = out_meta(node)
    packet = node.target.overloadpacket
    if packet in (aten.zeros, aten.zeros_like):
        value = 0
    elif packet in (aten.ones, aten.ones_like):
        value = 1
    elif packet is aten.scalar_tensor:
        value = args[0]
    else:
        value = args[1]
    dtype = meta.dtype
    return LazyValue(dtype, meta.device, out_sizes(node), lambda idx: ops.constant(value, dtype))


@register(aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided)
def _empty(ctx, node, *args, **kwargs):
    meta = out_meta(node)
    dtype = meta.dtype
    return LazyValue(dtype, meta.device, out_sizes(node), lambda idx: ops.constant(0, dtype))


@register(aten.arange, torch.ops.prims.iota)
def _arange(ctx, node, *args, **kwargs):
    meta = out_meta(node)
    packet = node.target.overloadpacket
    if packet is torch.ops.prims.iota:
        start, step = args[1], args[2]
    else:
        nums = [a for a in args if isinstance(a, (int, float, sympy.Expr))]
        if len(nums) == 1:
            start, step = 0, 1
        else:
            start = nums[0]
            step = nums[2] if len(nums) > 2 else 1
    dtype = meta.dtype
    math = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def fn(idx):
        i = ops.to_dtype(ops.index_expr(idx[0], torch.int64), math)
        value = ops.add(ops.mul(i, size_value(step, math)), size_value(start, math))
        return ops.to_dtype(value, dtype)

    return LazyValue(dtype, meta.device, out_sizes(node), fn)
