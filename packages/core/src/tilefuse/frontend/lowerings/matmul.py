"""GEMM-family lowerings: ``mm`` and ``bmm`` of float inputs of one dtype always become
``Template`` nodes. Codegen asks the installed autotune selector for a kernel (with a fused
epilogue), or runs them as eager torch calls when there is none (``codegen.templates``).
``addmm`` is decomposed into ``mm`` + bias add, so its bias becomes epilogue. Other dtypes
run as extern calls to the vendor library."""

from __future__ import annotations

import torch

from ..gemm_rows import result_rows
from ..lowering import Unsupported, register
from .common import out_meta

aten = torch.ops.aten
_GEMM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@register(aten.mm, aten.bmm)
def _gemm(ctx, node, a, b):
    meta = out_meta(node)
    if meta.dtype not in _GEMM_DTYPES or a.dtype != b.dtype:
        raise Unsupported(f"GEMM templates take float32/16 inputs of one dtype, not {a.dtype}")
    op = "bmm" if node.target.overloadpacket is aten.bmm else "mm"
    return ctx.template(op, [a, b], meta, result_rows(op, meta, ctx.size_hints))
