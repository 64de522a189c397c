"""GEMM-family lowerings: ``mm`` and ``bmm`` become ``Template`` nodes (chosen later by
the autotuner, with a fused epilogue) when tilefuse-autotune is installed and a backend
owns ``template:gemm`` on the device; otherwise they are extern calls to the vendor
library. ``addmm`` is decomposed into ``mm`` + bias add, so its bias becomes epilogue."""

from __future__ import annotations

import importlib.util

import torch

from ... import plugin
from ...backend_selection import candidate_backends
from ..lowering import Unsupported, register
from .common import out_meta

aten = torch.ops.aten
_GEMM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def templates_available(device: torch.device) -> str | None:
    """Why GEMM templates cannot be used on ``device``, or ``None`` when they can."""
    if importlib.util.find_spec("tilefuse_autotune") is None:
        return "tilefuse-autotune is not installed"
    owners = [b for b in candidate_backends(device.type)
              if plugin.CAP_TEMPLATE_GEMM in b.info.capabilities]  # fmt: skip
    if not owners:
        return f"no backend owns {plugin.CAP_TEMPLATE_GEMM} on {device.type}"
    return None


@register(aten.mm, aten.bmm)
def _gemm(ctx, node, a, b):
    meta = out_meta(node)
    why = templates_available(meta.device)
    if why:
        raise Unsupported(why)
    if meta.dtype not in _GEMM_DTYPES or a.dtype != b.dtype:
        raise Unsupported(f"GEMM templates take float32/16 inputs of one dtype, not {a.dtype}")
    op = "bmm" if node.target.overloadpacket is aten.bmm else "mm"
    return ctx.template(op, [a, b], meta)
