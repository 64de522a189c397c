"""The differential cases: small programs compiled by tilefuse and compared with eager.

A ``Case`` is data: a function, the inputs it takes (``Arg``: shape, dtype, layout) and
what it needs of the backend. Sizes are small and odd (primes, 1, 0) so the whole table
runs in about a minute even through Triton's CPU interpreter.

``structural_cases()`` run once, in the backend's first floating dtype (``base``);
``dtype_cases(d)`` run for each dtype ``d`` the backend declares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import plugin


@dataclass(frozen=True)
class Arg:
    """One input: ``shape``, ``dtype`` name (``None``: the case's dtype) and whether it is
    a transposed (non-contiguous) view of its last two dimensions."""

    shape: tuple[int, ...]
    dtype: str | None = None
    transposed: bool = False


@dataclass(frozen=True)
class Case:
    """``fn(*inputs)`` compiled against eager; ``capability`` is what the backend must
    declare, ``floating`` that the case's dtype must be a floating one, ``dtype`` the
    case's dtype (``None``: the backend's base dtype)."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Arg, ...]
    capability: str = plugin.CAP_POINTWISE
    floating: bool = False
    dtype: str | None = None

    def dtypes(self, base: str) -> set[str]:
        """Every dtype name the case computes in: its own (``base`` when unset) and its
        inputs'. The backend must declare them all."""
        own = self.dtype or base
        return {own} | {a.dtype or own for a in self.args}


P, R = plugin.CAP_POINTWISE, plugin.CAP_REDUCTION
A57 = (Arg((5, 7)), Arg((5, 7)))
A357 = (Arg((3, 5, 7)),)


def _pointwise() -> list[Case]:
    return [
        Case("pointwise: x * y + relu(x)", lambda x, y: x * y + torch.relu(x), A57),
        Case("pointwise: where(x > y, x, -y)", lambda x, y: torch.where(x > y, x, -y), A57),
        Case(
            "pointwise: clamp(abs(x) - y, -1, 2)",
            lambda x, y: torch.clamp(torch.abs(x) - y, -1, 2),
            A57,
        ),
        Case(
            "pointwise: exp, sin, sigmoid, tanh, sqrt",
            lambda x: (
                torch.exp(x)
                + torch.sin(x) * torch.sigmoid(x)
                - torch.tanh(x)
                + torch.sqrt(torch.abs(x))
            ),
            (Arg((5, 7)),),
            floating=True,
        ),
        Case(
            "pointwise: transposed (non-contiguous) input",
            lambda x, y: x * 2 + y,
            (Arg((5, 7), transposed=True), Arg((5, 7))),
        ),
    ]


def _broadcasting() -> list[Case]:
    return [
        Case("broadcast: [5, 1] + [1, 7]", lambda x, y: x + y, (Arg((5, 1)), Arg((1, 7)))),
        Case("broadcast: [3, 1, 4] * [4]", lambda x, y: x * y, (Arg((3, 1, 4)), Arg((4,)))),
        Case("broadcast: a Python scalar", lambda x: x * 3 + 1, (Arg((5, 7)),)),
        Case("broadcast: a 0-d tensor", lambda x, s: x - s, (Arg((5, 7)), Arg(()))),
    ]


def _promotion() -> list[Case]:
    return [
        Case(
            "type promotion: int32 + float32",
            lambda x, y: x + y,
            (Arg((5, 7), "int32"), Arg((5, 7), "float32")),
            dtype="float32",
        ),
        Case(
            "type promotion: float16 * float32",
            lambda x, y: x * y,
            (Arg((5, 7), "float16"), Arg((5, 7), "float32")),
            dtype="float32",
        ),
        Case(
            "type promotion: bfloat16 + float16",
            lambda x, y: x + y,
            (Arg((5, 7), "bfloat16"), Arg((5, 7), "float16")),
            dtype="float32",
        ),
        Case(
            "type promotion: uint8 + int8",
            lambda x, y: x + y,
            (Arg((5, 7), "uint8"), Arg((5, 7), "int8")),
            dtype="int16",
        ),
        Case(
            "type promotion: int64 + a Python float",
            lambda x: x + 0.5,
            (Arg((5, 7), "int64"),),
            dtype="float32",
        ),
        Case(
            "type promotion: float32 to float16 and back",
            lambda x: x.half().float() * 2,
            (Arg((5, 7), "float32"),),
            dtype="float16",
        ),
    ]


def _reductions() -> list[Case]:
    cases = [
        Case("reduction: sum of all elements", lambda x: x.sum(), A357, R),
        Case("reduction: amax of all elements", lambda x: x.amax(), A357, R),
    ]
    for d in range(3):
        cases += [
            Case(f"reduction: sum(dim={d})", lambda x, d=d: x.sum(d), A357, R),
            Case(f"reduction: amax(dim={d})", lambda x, d=d: x.amax(d), A357, R),
            Case(f"reduction: argmax(dim={d})", lambda x, d=d: x.argmax(d), A357, R, True),
            Case(f"reduction: mean(dim={d})", lambda x, d=d: x.mean(d), A357, R, True),
            Case(f"reduction: softmax(dim={d})", lambda x, d=d: torch.softmax(x, d), A357, R, True),
        ]
    return cases


def _layer_norm(x: Any) -> Any:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + 1e-5)


def _fused() -> list[Case]:
    return [
        Case("fused: pointwise into reduction", lambda x, y: (x * y + 1).sum(-1), A57, R),
        Case(
            "fused: reduction into pointwise",
            lambda x: x - x.amax(1, keepdim=True),
            (Arg((5, 7)),),
            R,
        ),
        Case("fused: layer-norm (mean, var, rsqrt)", _layer_norm, (Arg((5, 7)),), R, True),
        Case(
            "fused: two reductions of one input", lambda x: (x.sum(1), x.amax(1)), (Arg((5, 7)),), R
        ),
        Case("fused: a reduction of a reduction", lambda x: x.sum(2).amax(1), A357, R),
    ]


def _odd_sizes() -> list[Case]:
    return [
        Case("odd size: one element", lambda x: x * 2 + 1, (Arg((1,)),)),
        Case("odd size: 0-d tensor", lambda x: x * 2 + 1, (Arg(()),)),
        Case("odd size: [1, 1] sum(dim=1)", lambda x: x.sum(1), (Arg((1, 1)),), R),
        Case("odd size: primes [13, 17] sum(dim=0)", lambda x: x.sum(0), (Arg((13, 17)),), R),
        Case("odd size: long row [2, 1031] amax(dim=1)", lambda x: x.amax(1), (Arg((2, 1031)),), R),
        Case("zero size: [0, 5] pointwise", lambda x: x * 2 + 1, (Arg((0, 5)),)),
        Case("zero size: [4, 0] sum(dim=1)", lambda x: x.sum(1), (Arg((4, 0)),), R),
        Case("zero size: [0, 3] sum(dim=0)", lambda x: x.sum(0), (Arg((0, 3)),), R),
    ]


def structural_cases() -> list[Case]:
    """Pointwise, broadcasting, type promotion, reductions over each dim, fused shapes,
    odd and zero sizes."""
    return [
        *_pointwise(),
        *_broadcasting(),
        *_promotion(),
        *_reductions(),
        *_fused(),
        *_odd_sizes(),
    ]


def dtype_cases(dtype: str) -> list[Case]:
    """The cases run for each dtype the backend declares."""
    x2 = (Arg((5, 7), dtype), Arg((5, 7), dtype))
    x1 = (Arg((5, 7), dtype),)
    return [
        Case(f"dtype {dtype}: x + y * 2 - x", lambda x, y: x + y * 2 - x, x2, dtype=dtype),
        Case(f"dtype {dtype}: maximum(x, y)", lambda x, y: torch.maximum(x, y), x2, dtype=dtype),
        Case(f"dtype {dtype}: sum(dim=1)", lambda x: x.sum(1), x1, R, dtype=dtype),
        Case(f"dtype {dtype}: amax(dim=0)", lambda x: x.amax(0), x1, R, dtype=dtype),
    ]
