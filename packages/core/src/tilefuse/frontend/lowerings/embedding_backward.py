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

Everywhere else the op stays ATen's own (an extern of ``aten.embedding_dense_backward``).
"""

from __future__ import annotations

import torch

from ..lowering import register
from .common import out_meta

aten = torch.ops.aten

#: Device types on which ``index_add_`` adds atomically (tests add ``"cpu"``).
ATOMIC_DEVICES = {"cuda"}
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
    if not atomic_adds_serve(meta, bool(by_freq)):
        return ctx.extern(node, (grad, indices, num_weights, padding_idx, by_freq), {}, _ATEN)
    ctx.note_extern(node, _ATOMIC)
    args = (ctx.operand_buffer(grad), ctx.operand_buffer(indices), num_weights, padding_idx)
    return ctx.extern_call(
        torch.ops.tilefuse.embedding_dense_backward_atomic.default, args, {}, meta, _ATOMIC
    )
