"""The decomposition table AOTAutograd uses: torch's core-aten table minus every op
tilefuse lowers itself (a lowering keeps structure a decomposition would lose,
e.g. softmax as max/sum/normalise in one kernel), plus tilefuse's own ``addmm``."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch._decomp import core_aten_decompositions, get_decompositions

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

# Ops core-aten decomposes that must stay whole. The CPU flash-attention decomposition
# returns the attention weights where the op returns its log-sum-exp (fine for export's
# inference graphs), but the backward kernel AOTAutograd pairs with it reads that output
# as a log-sum-exp: the gradients come out wrong. The fused op runs as an extern instead.
KEEP_WHOLE = [aten._scaled_dot_product_flash_attention_for_cpu]


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
    return table
