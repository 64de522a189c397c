"""Shared helpers for the Triton GEMM template tests: build a case, run a choice, compare.

A ``GemmCase`` holds real input tensors (optionally transposed views), the
epilogue, and the output layout. ``check_choice`` runs a choice on them and
compares against the definition: ``Epilogue.apply_reference`` applied to the
float32 product of the same (already rounded) inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tilefuse import plugin

# (rtol, atol) per output dtype, for a product scaled to unit variance.
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}
# tf32 keeps 10 mantissa bits.
TF32_TOLERANCE = (1e-2, 1e-2)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class GemmCase:
    op: str
    inputs: list[torch.Tensor]  # the op's tensors, then the epilogue's operands
    epilogue: plugin.Epilogue
    out: torch.Tensor

    @property
    def specs(self) -> tuple[plugin.TensorSpec, ...]:
        return tuple(plugin.TensorSpec.of(t) for t in self.inputs)

    @property
    def layout(self) -> plugin.TensorSpec:
        return plugin.TensorSpec.of(self.out)

    def reference(self) -> torch.Tensor:
        n_main = 3 if self.op == "addmm" else 2
        a, b = self.inputs[n_main - 2], self.inputs[n_main - 1]
        acc = torch.matmul(a.double(), b.double()).float()
        if self.op == "addmm":
            acc = acc + self.inputs[0].float()
        return self.epilogue.apply_reference(acc, self.inputs[n_main:]).to(self.out.dtype)


def matrix(
    rows: int,
    cols: int,
    dtype: torch.dtype,
    device: str,
    *,
    transposed: bool = False,
    batch: int | None = None,
    scale: float = 1.0,
    gen: torch.Generator,
) -> torch.Tensor:
    """A ``[batch,] rows x cols`` tensor of N(0, scale^2) values; ``transposed`` stores it
    column-major (a ``.transpose(-1, -2)`` view), so strides are not the contiguous ones."""
    lead = () if batch is None else (batch,)
    shape = lead + ((cols, rows) if transposed else (rows, cols))
    values = (torch.randn(shape, generator=gen) * scale).to(dtype).to(device)
    return values.transpose(-1, -2) if transposed else values


def epilogue_operand(
    kind: str, m: int, n: int, batch: int | None, device: str, gen: torch.Generator
) -> torch.Tensor:
    """A float32 operand for an ``add_*`` step of the given kind (``add_matrix`` transposed)."""
    if kind == "add_bias_n":
        return torch.randn(n, generator=gen).to(device)
    if kind == "add_bias_m":
        shape = (m, 1) if batch is None else (batch, m, 1)
        return torch.randn(shape, generator=gen).to(device)
    return matrix(m, n, torch.float32, device, transposed=True, batch=batch, gen=gen)


def make_case(
    op: str,
    m: int,
    n: int,
    k: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    batch: int = 2,
    transpose_a: bool = False,
    transpose_b: bool = False,
    bias_shape: str = "n",
    steps: Sequence[plugin.EpilogueStep] = (),
    operand_kinds: Sequence[str] = (),
    out_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> GemmCase:
    """A case for ``op`` (``mm``, ``addmm``, ``bmm``); inputs scaled so ``a @ b`` has unit variance.

    ``operand_kinds`` lists the epilogue operands to create (their ``add_*``
    kinds); ``steps`` refer to them by index. ``bias_shape`` is ``"n"`` ([N]) or
    ``"mn"`` ([M, N]) for addmm.
    """
    gen = torch.Generator().manual_seed(seed)
    b_dim = batch if op == "bmm" else None
    scale = 1.0 / math.sqrt(math.sqrt(max(k, 1)))
    a = matrix(m, k, dtype, device, transposed=transpose_a, batch=b_dim, scale=scale, gen=gen)
    b = matrix(k, n, dtype, device, transposed=transpose_b, batch=b_dim, scale=scale, gen=gen)
    inputs = [a, b]
    if op == "addmm":
        bias = torch.randn(n if bias_shape == "n" else (m, n), generator=gen).to(dtype).to(device)
        inputs.insert(0, bias)
    operands = [epilogue_operand(kind, m, n, b_dim, device, gen) for kind in operand_kinds]
    epilogue = plugin.Epilogue(
        tuple(steps),
        tuple(plugin.TensorSpec.of(t) for t in operands),
        None if out_dtype is None else str(out_dtype).removeprefix("torch."),
    )
    out_shape = (m, n) if b_dim is None else (b_dim, m, n)
    out = torch.full(out_shape, float("nan"), dtype=out_dtype or dtype, device=device)
    return GemmCase(op, inputs + operands, epilogue, out)


def check_choice(choice: plugin.Choice, case: GemmCase, tolerance: tuple | None = None) -> None:
    """Run ``choice`` on ``case`` and assert the output matches the reference."""
    choice.run(*case.inputs, out=case.out)
    expected = case.reference()
    rtol, atol = tolerance or TOLERANCES[case.out.dtype]
    torch.testing.assert_close(case.out.float(), expected.float(), rtol=rtol, atol=atol)
