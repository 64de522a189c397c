"""GEMM-family lowerings: ``mm`` and ``bmm`` of float inputs of one dtype always become
``Template`` nodes. Codegen asks the installed autotune selector for a kernel (with a fused
epilogue), or runs them as eager torch calls when there is none (``codegen.templates``).
``addmm`` is decomposed into ``mm`` + bias add, so its bias becomes epilogue. Other dtypes
run as extern calls to the vendor library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...errors import SymbolicUnsupported
from ...extern_gemm import padded_width
from ...ir.nodes import Layout, sympify_sizes
from ...ir.symbolic import hint_of, size_expr
from ..lowering import Unsupported, register
from .common import out_meta

aten = torch.ops.aten
_GEMM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Where an odd N's result gets padded rows: cuBLAS's alignment rule (``padded_width``).
PADDED_ROW_DEVICES = ("cuda",)


@register(aten.mm, aten.bmm)
def _gemm(ctx, node, a, b):
    meta = out_meta(node)
    if meta.dtype not in _GEMM_DTYPES or a.dtype != b.dtype:
        raise Unsupported(f"GEMM templates take float32/16 inputs of one dtype, not {a.dtype}")
    op = "bmm" if node.target.overloadpacket is aten.bmm else "mm"
    return ctx.template(op, [a, b], meta, _padded_rows(op, meta, ctx.size_hints))


def _padded_rows(op: str, meta: torch.Tensor, hints: Mapping[Any, int]) -> Layout | None:
    """For a large half-precision CUDA ``mm`` whose N is no multiple of 16 bytes (GPT-2's
    vocabulary of 50257): its result with rows padded to one (``padded_width``), which the
    extern GEMM writes in place with cuBLAS's aligned kernels. Consumers read it through its
    strides; a graph output the caller gets has eager's dense layout from one copy, a saved
    one keeps the padded rows (``GraphLowering._output``). N must
    be static; a symbolic M (a sequence length) is judged at its size hint."""
    if op != "mm" or meta.device.type not in PADDED_ROW_DEVICES:
        return None
    m, n = meta.shape
    if not isinstance(n, int):
        return None
    try:
        rows = hint_of(size_expr(m), hints)
    except SymbolicUnsupported:
        return None
    width = padded_width(meta.dtype, n, rows * n)
    if width is None:
        return None
    return Layout(meta.device, meta.dtype, sympify_sizes(meta.shape), sympify_sizes((width, 1)))
