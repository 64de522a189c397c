"""GEMM-family lowerings. ``mm``, ``addmm`` and ``bmm`` become ``Template`` nodes when a
backend owns ``template:gemm`` on the device, otherwise extern calls to the vendor library."""

from __future__ import annotations

import torch

from ...ir.nodes import Extern
from ..lowering import Unsupported, register

aten = torch.ops.aten


@register(aten.mm, aten.bmm, aten.addmm)
def _gemm(ctx, node, *args, **kwargs):
    raise Unsupported("GEMM templates are chosen by the autotuner; no template backend yet")


__all__ = ["Extern"]
