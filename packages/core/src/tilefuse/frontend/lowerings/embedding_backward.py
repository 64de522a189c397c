"""An embedding's weight gradient: eager calls, by atomic adds on CUDA where that is exact
enough and allowed.

ATen's ``embedding_dense_backward`` sorts the indices on CUDA once there are more than
3072 of them and sums each run of equal ones: about ten small kernels (radix-sort passes,
memsets, segment sums) per embedding, 0.2 ms of BERT's fp32 training step on the H200
for its three embeddings. ``tilefuse::embedding_dense_backward_atomic`` zero-fills the
gradient and adds each row into place with ``index_add_`` (atomic adds, no sort): two
kernels (a third zeroes the ``padding_idx`` row). It is used where:

- the gradient is float32 or float64: atomic adds in a half type would round every one
  of the thousands of additions a row of a small table (positions, token types) takes,
  where ATen accumulates in float32;
- the device is one whose ``index_add_`` adds atomically (CUDA, ``ATOMIC_DEVICES``);
- deterministic algorithms are off (atomic adds sum in no fixed order; Dynamo
  recompiles when the setting changes);
- ``scale_grad_by_freq`` is off.

A table of at most ``DENSE_ROWS`` rows (BERT's two token types) is neither: every token
adds into the same few rows, so atomic adds serialize (4096 adds per address, about 0.06 ms
of BERT's step) and ATen sorts. Its gradient is a reduction over the tokens instead, row
``v`` summing the gradient rows whose index is ``v``: one generated kernel that reads the
gradient once per table row, in float32 for half types, in a fixed order, on any device.

Everywhere else the op stays ATen's own (an extern of ``aten.embedding_dense_backward``).
"""

from __future__ import annotations

import torch

from ...ir.index import unflatten
from ...ir.nodes import product
from ...ir.ops import ops
from ..lowering import register
from ..values import LazyValue, Value
from .common import compute_dtype, out_meta
from .reductions import reduce

aten = torch.ops.aten

#: Device types on which ``index_add_`` adds atomically (tests add ``"cpu"``).
ATOMIC_DEVICES = {"cuda"}
#: Tables of at most this many rows sum their gradient as a reduction (module docstring).
DENSE_ROWS = 4
_ATEN = "embedding gradients run as eager calls (ATen's kernel)"
_ATOMIC = "embedding gradients run as eager calls (zero fill + index_add_, atomic adds)"


@torch.library.custom_op("tilefuse::embedding_dense_backward_atomic", mutates_args=())
def embedding_dense_backward_atomic(
    grad: torch.Tensor, indices: torch.Tensor, num_weights: int, padding_idx: int
) -> torch.Tensor:
    """``aten.embedding_dense_backward(grad, indices, num_weights, padding_idx, False)``
    by a zero fill and ``index_add_``: row ``indices[i]`` of the result is the sum of the
    rows ``grad[i]`` that name it, and row ``padding_idx`` (when >= 0) is zero."""
    width = grad.shape[-1]
    out = grad.new_zeros((num_weights, width))
    out.index_add_(0, indices.reshape(-1), grad.reshape(indices.numel(), width))
    if 0 <= padding_idx < num_weights:
        out[padding_idx] = 0
    return out


@embedding_dense_backward_atomic.register_fake
def _(grad: torch.Tensor, indices: torch.Tensor, num_weights: int, padding_idx: int):
    return grad.new_empty((num_weights, grad.shape[-1]))


def atomic_adds_serve(grad: torch.Tensor, scale_grad_by_freq: bool) -> bool:
    """Whether the gradient of this embedding is summed by atomic adds (module docstring)."""
    return (
        not scale_grad_by_freq
        and grad.dtype in (torch.float32, torch.float64)
        and grad.device.type in ATOMIC_DEVICES
        and not torch.are_deterministic_algorithms_enabled()
    )


@register(aten.embedding_dense_backward.default)
def _embedding_dense_backward(ctx, node, grad, indices, num_weights, padding_idx, by_freq):
    meta = out_meta(node)
    if not by_freq and isinstance(num_weights, int) and 0 < num_weights <= DENSE_ROWS:
        return _summed_by_rows(ctx, grad, indices, num_weights, padding_idx, meta.dtype)
    if not atomic_adds_serve(meta, bool(by_freq)):
        return ctx.extern(node, (grad, indices, num_weights, padding_idx, by_freq), {}, _ATEN)
    ctx.note_extern(node, _ATOMIC)
    args = (ctx.operand_buffer(grad), ctx.operand_buffer(indices), num_weights, padding_idx)
    return ctx.extern_call(
        torch.ops.tilefuse.embedding_dense_backward_atomic.default, args, {}, meta, _ATOMIC
    )


def _summed_by_rows(
    ctx, grad: Value, indices: Value, rows: int, padding_idx: int, dtype: torch.dtype
) -> Value:
    """The gradient of a ``rows``-row table as ``sum(where(indices[t] == v, grad[t], 0))``
    over the tokens ``t``, for each row ``v`` (``padding_idx``'s row is all zero)."""
    math = compute_dtype(dtype)

    def element(index):
        row, token, column = index
        at = unflatten(token, indices.size)
        hit = ops.eq(ops.to_dtype(indices.load(at), torch.int64), ops.index_expr(row, torch.int64))
        if 0 <= padding_idx < rows:
            kept = ops.ne(ops.index_expr(row, torch.int64), ops.constant(padding_idx, torch.int64))
            hit = ops.logical_and(hit, kept)
        # ATen flattens both: grad need only hold numel(indices) rows of the table's width
        value = ops.to_dtype(grad.load([*unflatten(token, grad.size[:-1]), column]), math)
        return ops.where(hit, value, ops.constant(0, math))

    spread = LazyValue(math, grad.device, (rows, product(indices.size), grad.size[-1]), element)
    return reduce(ctx, spread, [1], False, "sum", dtype, math)
