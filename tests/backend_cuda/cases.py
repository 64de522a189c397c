"""Shared GEMM request builders and the eager reference for the CUDA backend's tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tilefuse.plugin import Epilogue, EpilogueStep, TensorSpec

DEV = "cuda"


def spec(shape: tuple[int, ...], dtype: str, col_major: bool = False, device: str = DEV):
    """A contiguous spec, or one whose last two modes are column-major."""
    shape = tuple(shape)
    if not col_major:
        stride, acc = [], 1
        for s in reversed(shape):
            stride.append(acc)
            acc *= s
        return TensorSpec(shape, tuple(reversed(stride)), dtype, device)
    *batch, r, c = shape
    stride = [1, r] if not batch else [r * c, 1, r]
    return TensorSpec(shape, tuple(stride), dtype, device)


@dataclass(frozen=True)
class Case:
    """One GEMM request: op, input specs, output spec, epilogue."""

    op: str
    inputs: tuple[TensorSpec, ...]
    layout: TensorSpec
    epilogue: Epilogue = field(default_factory=Epilogue)

    @property
    def specs(self) -> tuple[TensorSpec, ...]:
        """What a provider receives (``plugin.ChoiceProvider``): op inputs, then operands."""
        return (*self.inputs, *self.epilogue.operands)

    def label(self) -> str:
        steps = "+".join(s.kind for s in self.epilogue.steps) or "plain"
        return f"{self.op}-{'x'.join(map(str, self.layout.shape))}-{steps}"


def make_case(
    op: str,
    m: int,
    n: int,
    k: int,
    *,
    batch: int = 1,
    dtype: str = "bfloat16",
    a_col: bool = False,
    b_col: bool = False,
    d_col: bool = False,
    out_dtype: str | None = None,
    steps: tuple[tuple, ...] = (),
    device: str = DEV,
) -> Case:
    """A request; ``steps`` are ``(kind,)``, ``(kind, value)`` for mul_scalar, or
    ``(kind, "n"|"m"|"mn")`` for an added operand of shape [N], [M,1] or [M,N]."""
    lead = (batch,) if op == "bmm" else ()
    a = spec((*lead, m, k), dtype, a_col, device)
    b = spec((*lead, k, n), dtype, b_col, device)
    od = out_dtype or dtype
    out = spec((*lead, m, n), od, d_col, device)
    operands: list[TensorSpec] = []
    ep_steps: list[EpilogueStep] = []
    for step in steps:
        kind = step[0]
        if kind == "mul_scalar":
            ep_steps.append(EpilogueStep(kind, value=step[1]))
        elif kind in ("add_bias_n", "add_bias_m", "add_matrix"):
            shape = {"n": (n,), "m": (*lead, m, 1), "mn": (*lead, m, n)}[step[1]]
            operands.append(spec(shape, dtype, device=device))
            ep_steps.append(EpilogueStep(kind, operand=len(operands) - 1))
        else:
            ep_steps.append(EpilogueStep(kind))
    inputs = (a, b)
    if op == "addmm":
        inputs = (spec((n,), dtype, device=device), a, b)
    epilogue = Epilogue(tuple(ep_steps), tuple(operands), out_dtype)
    return Case(op, inputs, out, epilogue)


def reference(case: Case, tensors: list[Any]) -> Any:
    """Eager result: float32 GEMM of the same inputs, then ``Epilogue.apply_reference``."""
    import torch

    n_in = 3 if case.op == "addmm" else 2
    ins, extra = tensors[:n_in], tensors[n_in:]
    if case.op == "mm":
        acc = torch.mm(ins[0].float(), ins[1].float())
    elif case.op == "bmm":
        acc = torch.bmm(ins[0].float(), ins[1].float())
    else:
        acc = torch.addmm(ins[0].float(), ins[1].float(), ins[2].float())
    return case.epilogue.apply_reference(acc, extra).to(case.layout.torch_dtype())
