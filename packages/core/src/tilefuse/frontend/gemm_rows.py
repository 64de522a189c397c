"""Padded rows for GEMM results and operands whose row length cuBLAS serves only slowly.

A half-precision CUDA GEMM reading or writing a row-major matrix whose rows are no
multiple of 16 bytes long (GPT-2's vocabulary of 50257) gets cuBLAS's 1-element-aligned
kernels: several times slower than the aligned ones. A buffer the lowering gives padded
rows (``extern_gemm.padded_width``) keeps every row start 16-byte aligned; consumers
read it through its strides, and ``ExternChoice.run`` splits the GEMM into aligned
blocks (``extern_gemm``). This module decides which buffers get such rows: a GEMM's
result (``result_rows``), and an intermediate a GEMM reads as an operand, as it is or
transposed (``operand_rows``: the logits' gradient in a language model's backward).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy
import torch
import torch.fx

from ..errors import SymbolicUnsupported
from ..extern_gemm import padded_width
from ..ir.nodes import Layout, sympify_sizes
from ..ir.symbolic import hint_of, size_expr

aten = torch.ops.aten

# Where padded rows pay: cuBLAS's alignment rule (``padded_width``).
PADDED_ROW_DEVICES = ("cuda",)
# Ops through which a GEMM reads an operand as it is laid out (a transpose of a
# 2-D matrix reads the same memory column-major).
_TRANSPOSES = frozenset({aten.t.default, aten.transpose.int, aten.permute.default})


def result_rows(op: str, meta: torch.Tensor, hints: Mapping[Any, int]) -> Layout | None:
    """The layout with padded rows for the result of ``op`` (``mm`` only), or ``None``
    for eager's. N must be static; a symbolic M (a sequence length) is judged at its
    size hint."""
    if op != "mm":
        return None
    strides = _padded_strides(meta, hints)
    if strides is None:
        return None
    return Layout(meta.device, meta.dtype, sympify_sizes(meta.shape), strides)


def operand_rows(node: torch.fx.Node, hints: Mapping[Any, int]) -> tuple[sympy.Expr, ...] | None:
    """Padded-row strides for ``node``'s value where an ``mm`` reads it as an operand,
    directly or through a transpose, and its rows would be slow (see the module doc), so
    that both backward GEMMs of a language model's head run aligned. ``None`` otherwise.
    A value the graph computes is written with them at no cost; one that only views an
    input (the logits' gradient as a tangent, when the loss runs outside the graph) costs
    a copy, which at GPT-2's size is about a twentieth of what the aligned GEMMs save."""
    if not any(_feeds_mm(user) for user in node.users):
        return None
    meta = node.meta.get("val")
    if not isinstance(meta, torch.Tensor) or meta.dim() != 2:
        return None
    # Row-major with static strides, read without asking a symbolic size anything (a
    # question about a symbol, as ``is_contiguous`` asks, adds a guard that specializes it).
    n, strides = meta.shape[1], tuple(meta.stride())
    if not all(isinstance(v, int) for v in (n, *strides)) or strides != (n, 1):
        return None
    return _padded_strides(meta, hints)


def _feeds_mm(user: torch.fx.Node) -> bool:
    if user.target is aten.mm.default:
        return True
    if user.target in _TRANSPOSES:
        return any(u.target is aten.mm.default for u in user.users)
    return False


def _padded_strides(meta: torch.Tensor, hints: Mapping[Any, int]) -> tuple[Any, ...] | None:
    """``(width, 1)`` for a 2-D ``meta`` on a padded-row device whose rows ``padded_width``
    pads, else ``None``."""
    if meta.dim() != 2 or meta.device.type not in PADDED_ROW_DEVICES:
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
    return (sympy.Integer(width), sympy.Integer(1))
