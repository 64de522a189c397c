"""Split reductions on a real GPU at real sizes (``TILEFUSE_SPLIT_REDUCTIONS=auto``: Triton
on CUDA declares ``plugin.CAP_SPLIT_REDUCTIONS``), checked against a float64 reference:
the compiled result's error may be at most twice eager's own (float32) error plus a few
ulps. Run with ``pytest -m gpu tests/e2e/test_gpu_split_reductions.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import compiled_reports, kernel_count

pytestmark = pytest.mark.gpu


def _no_worse_than_eager(actual, eager, reference, what: str) -> None:
    """``actual`` is as close to the float64 ``reference`` as ``eager`` is, up to twice
    eager's error plus a few ulps of ``actual``'s dtype at the reference's scale."""
    reference = reference.double()
    eager_err = (eager.double() - reference).abs().max().item()
    err = (actual.double() - reference).abs().max().item()
    ulp = torch.finfo(actual.dtype).eps * max(reference.abs().max().item(), 1.0)
    assert err <= 2 * eager_err + 4 * ulp, (
        f"{what}: compiled error {err:.3g} against float64, eager's {eager_err:.3g}"
    )


def _kernel_count(monkeypatch, fn, *inputs, split: str) -> tuple[object, int]:
    """``fn`` compiled with ``TILEFUSE_SPLIT_REDUCTIONS=split``: its result and kernels."""
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", split)
    out, reports = compiled_reports(fn, *inputs)
    return out, kernel_count(reports)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_sum_of_2_26_elements_is_split_and_accurate(monkeypatch, dtype):
    x = torch.randn(2**26, device="cuda").to(dtype)
    fn = lambda x: (x.sum(), x.mean(), x.amax())  # noqa: E731
    _, whole = _kernel_count(monkeypatch, fn, x, split="off")
    actual, kernels = _kernel_count(monkeypatch, fn, x, split="auto")
    assert kernels > whole, f"auto split nothing: {kernels} kernels, {whole} unsplit"
    eager = fn(x)
    reference = fn(x.double())
    for name, a, e, r in zip(("sum", "mean", "amax"), actual, eager, reference):
        assert a.dtype == e.dtype
        _no_worse_than_eager(a, e, r, name)
    assert torch.equal(actual[2], eager[2])  # a max is exact


def test_batch_norm_training_forward_backward_64x64x56x56(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(64, 64, 56, 56, device="cuda")
    w = torch.rand(64, device="cuda") + 0.5
    b = torch.randn(64, device="cuda")
    seed = torch.randn_like(x)

    def bn(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)

    def run(fn, dtype):
        ins = [t.to(dtype).detach().requires_grad_() for t in (x, w, b)]
        out = fn(*ins)
        (out * seed.to(dtype)).sum().backward()
        return [out.detach(), *(t.grad for t in ins)]

    def compiled_run(split: str) -> tuple[list[torch.Tensor], int]:
        # set for the whole run: AOTAutograd compiles the backward lazily, in backward()
        monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", split)
        forward_kernels = []

        def compiled(*ins):
            out, reports = compiled_reports(bn, *ins)
            forward_kernels.append(kernel_count(reports))
            return out

        return run(compiled, torch.float32), forward_kernels[0]

    unsplit, whole = compiled_run("off")
    actual, kernels = compiled_run("auto")
    assert kernels > whole, f"auto split nothing: {kernels} forward kernels, {whole} unsplit"
    eager = run(bn, torch.float32)
    reference = run(bn, torch.float64)
    names = ("out", "grad x", "grad w", "grad b")
    for name, a, u, e, r in zip(names, actual, unsplit, eager, reference):
        _no_worse_than_eager(a, e, r, name)
        _no_worse_than_eager(u, e, r, f"{name} (unsplit)")
