"""Differential runs on an AMD GPU: every offered choice against eager PyTorch.

Marked ``rocm``: skipped, with the reason, on machines without an AMD GPU and a ROCm build
of torch (this team has none).
"""

from __future__ import annotations

import pytest
import torch

from tilefuse import plugin
from tilefuse_rocm.provider import PROVIDER

pytestmark = pytest.mark.rocm


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(
    ("op", "m", "k", "n"), [("mm", 129, 67, 95), ("addmm", 64, 1, 33), ("bmm", 31, 40, 17)]
)
@pytest.mark.parametrize("transpose_b", [False, True])
def test_choices_match_eager(op, m, k, n, dtype, transpose_b):
    tdtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=gen).to(device="cuda", dtype=tdtype)

    batch = (3,) if op == "bmm" else ()
    a = r(*batch, m, k)
    b = r(*batch, n, k).transpose(-1, -2) if transpose_b else r(*batch, k, n)
    resid = r(*batch, m, n)
    bias = r(n) if op == "addmm" else None
    inputs = ([bias] if bias is not None else []) + [a, b]
    epi = plugin.Epilogue(
        steps=(
            plugin.EpilogueStep("add_matrix", 0),
            plugin.EpilogueStep("mul_scalar", value=0.5),
            plugin.EpilogueStep("gelu_erf"),
        ),
        operands=(plugin.TensorSpec.of(resid),),
    )
    eager_acc = (
        torch.addmm(bias.float(), a.float(), b.float())
        if bias is not None
        else (a.float() @ b.float())
    )
    want = epi.apply_reference(eager_acc, [resid])
    specs = [plugin.TensorSpec.of(t) for t in inputs]
    out_spec = plugin.TensorSpec.of(torch.empty_like(want))
    choices = list(PROVIDER.choices(op, specs, out_spec, epi))
    assert choices
    tol = 1e-4 if dtype == "float32" else 3e-2
    for choice in choices:
        choice.compile()
        out = torch.full_like(want, float("nan"))
        choice.run(*inputs, resid, out=out)
        torch.cuda.synchronize()
        torch.testing.assert_close(out.float(), want.float(), rtol=tol, atol=tol, msg=choice.name)
