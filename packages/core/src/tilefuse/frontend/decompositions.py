"""The decomposition table AOTAutograd uses: torch's core-aten table minus every op
tilefuse lowers itself (a lowering keeps structure a decomposition would lose,
e.g. softmax as max/sum/normalise in one kernel), plus tilefuse's own ``addmm``, ``take``
and ``native_layer_norm_backward``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch._decomp import core_aten_decompositions, get_decompositions
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .lowering import LOWERINGS

aten = torch.ops.aten

# Composite ops worth decomposing that core-aten leaves alone. The norms become fusable
# reductions instead of externs (and CPU's bf16 batch norm returns running statistics in
# another dtype than its fake tensors say, which an extern's output layout trusts).
EXTRA = [
    aten.native_dropout,
    aten.rms_norm,
    aten._native_batch_norm_legit_functional,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training,
    aten.native_batch_norm,
    aten.native_group_norm,
]

# Ops core-aten decomposes that must stay whole, each running as an extern:
# - The CPU flash-attention decomposition returns the attention weights where the op
#   returns its log-sum-exp (fine for export's inference graphs), but the backward kernel
#   AOTAutograd pairs with it reads that output as a log-sum-exp: the gradients come out
#   wrong.
# - embedding_dense_backward decomposes into index_put(accumulate=True). On CUDA that
#   sorts the indices and sums each run of equal ones serially, so an embedding read at
#   few rows (BERT's token types, positions repeated per batch row) took 2.8 ms of a
#   24 ms training step on the H200. ATen's own kernel sums repeated rows in parallel.
KEEP_WHOLE = [aten._scaled_dot_product_flash_attention_for_cpu, aten.embedding_dense_backward]


def addmm(bias: Any, a: Any, b: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * bias + alpha * (a @ b)`` as ``mm`` plus pointwise ops in the inputs' dtype.

    torch's own decomposition upcasts bf16/fp16 operands to float32 before the ``mm``
    (an 8x slower GEMM without tensor cores); this keeps the product in the input dtype,
    and the scheduler then fuses the bias add into the GEMM's float32 epilogue.
    ``beta == 0`` ignores ``bias`` entirely (NaN included), as ``torch.addmm`` does.
    """
    out = aten.mm.default(a, b)
    if alpha != 1:
        out = aten.mul.Tensor(out, alpha)
    if beta == 0:
        return out
    if beta != 1:
        bias = aten.mul.Tensor(bias, beta)
    return aten.add.Tensor(out, bias)


def take(self: Any, index: Any) -> Any:
    """``self.flatten()[index]`` as ``aten.index`` with the index tensor as it is.

    torch's own decomposition indexes in Python (``flattened[index]``), which reads a
    0-dim index as a Python integer: a ``.item()`` that fake tensors cannot trace, so
    AOTAutograd raised and Dynamo ran the op eagerly. ``aten.index`` takes a 0-dim
    index tensor like any other (a 0-dim result) and wraps negative indices as ``take``
    does.
    """
    return aten.index.Tensor(aten.reshape.default(self, [-1]), [index])


def native_layer_norm_backward(
    grad_out: Any,
    x: Any,
    normalized_shape: Sequence[int],
    mean: Any,
    rstd: Any,
    weight: Any,
    bias: Any,
    output_mask: Sequence[bool],
) -> tuple[Any, Any, Any]:
    """Layer norm's gradients, the input's in the order eager's CUDA kernel sums its terms.

    With ``g = grad_out * weight``, ``x_hat = (x - mean) * rstd`` and the row sums
    ``s1 = sum(g)``, ``s2 = sum(g * x_hat)`` over the normalized dims, the input's
    gradient is ``((N * g - x_hat * s2) - s1) * (rstd / N)``. torch's decomposition
    subtracts ``s1`` first, and ``N * g - s1`` cancels: where ``N == 1`` the ``* 1``
    folds away and a kernel that contracts ``g - s1`` into ``fma(grad_out, weight, -s1)``
    returns the product's rounding error times ``rstd`` (about 2e-5 where eager gives
    exactly 0, OpInfo layer_norm-float32-2 on CUDA). Subtracting ``x_hat * s2`` first
    rounds ``N * g`` whichever product a kernel contracts, as eager's kernel does.
    Half-precision inputs are computed in float32 and the gradients rounded once.
    """
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    axis = x.dim() - len(normalized_shape)
    inner_dims = list(range(axis, x.dim()))
    outer_dims = list(range(axis))
    n = math.prod(x.shape[axis:])
    if n == 0 or math.prod(x.shape[:axis]) == 0:
        return (
            x.new_zeros(x.shape) if output_mask[0] else None,
            x.new_zeros(x.shape[axis:]) if output_mask[1] and weight is not None else None,
            x.new_zeros(x.shape[axis:]) if output_mask[2] and bias is not None else None,
        )
    stats_shape = [*x.shape[:axis], *([1] * len(normalized_shape))]
    mean = mean.to(compute).reshape(stats_shape)
    rstd = rstd.to(compute).reshape(stats_shape)
    dy = grad_out.to(compute)
    x_hat = (x.to(compute) - mean) * rstd
    g = dy * weight.to(compute) if weight is not None else dy
    d_input = d_weight = d_bias = None
    if output_mask[0]:
        s1 = torch.sum(g, inner_dims, keepdim=True)
        s2 = torch.sum(g * x_hat, inner_dims, keepdim=True)
        d_input = ((g * n - x_hat * s2) - s1) * (rstd * (1.0 / n))
        d_input = d_input.to(x.dtype)
    if output_mask[1] and weight is not None:
        d_weight = dy * x_hat
        d_weight = torch.sum(d_weight, outer_dims) if outer_dims else d_weight
        d_weight = d_weight.to(weight.dtype)
    if output_mask[2] and bias is not None:
        d_bias = torch.sum(dy, outer_dims) if outer_dims else dy.clone()
        d_bias = d_bias.to(bias.dtype)
    return d_input, d_weight, d_bias


def log_softmax(x: Any, dim: int, half_to_float: bool) -> Any:
    """Eager's arithmetic, ``(x - max) - log(sum(exp(x - max)))`` in float32 at least,
    as pointwise ops over ``x`` and two row statistics, and contiguous as eager's result.

    Kept whole, ``_log_softmax``'s result is what its backward reads, so a training step
    saved (wrote, and read back) a tensor the size of the logits. Decomposed, the
    partitioner saves the two statistics and the backward recomputes the rest.
    """
    out_dtype = torch.float32 if half_to_float else x.dtype
    if x.dim() > 0 and not statically_known_true(x.shape[dim] != 0):
        if statically_known_true(x.shape[dim] == 0):
            return x.to(out_dtype).contiguous()  # empty rows: nothing to normalize
        return NotImplemented  # a data-dependent row length, maybe 0: the op stays whole
    wide = x.to(torch.promote_types(x.dtype, torch.float32))  # one node: softmax_sum's v
    shifted = wide - aten.amax.default(wide, [dim], True)
    total = aten.sum.dim_IntList(aten.exp.default(shifted), [dim], True)
    return (shifted - aten.log.default(total)).to(out_dtype).contiguous()


@functools.lru_cache(maxsize=1)
def decomposition_table() -> dict[Any, Any]:
    from . import lowerings  # noqa: F401  (fills LOWERINGS)

    table = dict(core_aten_decompositions().items())
    table.update(get_decompositions(EXTRA))
    for op in get_decompositions(KEEP_WHOLE):
        table.pop(op, None)
    for op in list(table):
        packet = getattr(op, "overloadpacket", None)
        if op in LOWERINGS or packet in LOWERINGS:
            del table[op]
    table[aten.addmm.default] = addmm
    table[aten.take.default] = take
    table[aten._log_softmax.default] = log_softmax
    table[aten.native_layer_norm_backward.default] = native_layer_norm_backward
    return table
