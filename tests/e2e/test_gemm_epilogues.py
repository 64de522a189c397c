"""GEMM epilogues end to end: look-alikes of known steps compile to what eager computes.

The matcher itself is tested on lowered IR in tests/core/test_epilogue_match.py; these
compile small GEMMs (16x24 @ 24x8) through the autotuner and the Triton template.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, compiled_reports, kernel_count

pytest.importorskip("tilefuse_autotune", reason="GEMM templates need tilefuse-autotune")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))


def _operands():
    return torch.randn(16, 24), torch.randn(24, 8), torch.randn(8)


def _epilogue_refusals(reports) -> list[str]:
    return [r for rep in reports for r in rep.refusals if r.startswith("epilogue:")]


def test_tanh_look_alike_of_gelu_runs_unfused_and_right():
    """Reported: ``y * 0.5 * (1 + tanh(y))`` was fused as gelu_tanh and gave wrong numbers."""

    def fn(a, b):
        y = a @ b
        return y * 0.5 * (1 + torch.tanh(y))

    reports = check(fn, *_operands()[:2])
    assert kernel_count(reports) == 2  # the GEMM, and the pointwise op as its own kernel
    assert any("no epilogue step computes" in r for r in _epilogue_refusals(reports))


def test_erf_near_miss_compiles_instead_of_raising():
    """Reported: ``y * 0.5 * (1 + erf(-y))`` raised IndexError in the matcher (strict mode
    raises on any fallback, so this compiling at all is the check)."""

    def fn(a, b):
        y = a @ b
        return y * 0.5 * (1 + torch.erf(-y))

    check(fn, *_operands()[:2])


def test_handwritten_gelu_tanh_then_bias_is_fused():
    """GPT-2's gelu written out is gelu_tanh. (``y`` is the GEMM itself: a pointwise value
    with several users, such as ``a @ b + bias``, is stored by its own node.)"""

    def fn(a, b, bias):
        y = a @ b
        gelu = 0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
        return gelu + bias

    reports = check(fn, *_operands())
    assert kernel_count(reports) == 1
    assert reports[0].kernels[0].kind == "template:mm"


def test_an_epilogue_in_another_shape_of_the_same_storage_order_is_fused():
    """A linear layer's result viewed as (1, T, C) plus bias and residual: the epilogue's
    shape differs from the GEMM's but it stores the GEMM's elements in the same order,
    so the template writes it as the GEMM's shape: one kernel."""
    x, w, b, r = torch.randn(9, 16), torch.randn(16, 12), torch.randn(12), torch.randn(1, 9, 12)
    reports = check(lambda x, w, b, r: (x @ w).view(1, 9, 12) + b + r, x, w, b, r)
    assert kernel_count(reports) == 1, [rep.format() for rep in reports]
    assert len(reports[0].kernels[0].nodes) == 2  # the GEMM and its epilogue


def test_an_operand_read_whole_is_passed_as_it_is():
    """The bias of the epilogue above is the whole tensor as laid out: the wrapper passes
    it as it is (a strided window per operand per call was host time); the residual
    read in the GEMM's shape keeps its 2-D window."""
    x, w, b, r = torch.randn(9, 16), torch.randn(16, 12), torch.randn(12), torch.randn(1, 9, 12)
    reports = check(lambda x, w, b, r: (x @ w).view(1, 9, 12) + b + r, x, w, b, r)
    (call,) = [line for line in reports[0].wrapper.splitlines() if "tf_gemm" in line]
    from tilefuse.codegen import wrapper

    fast = wrapper._reinterpret is not wrapper._as_strided_from
    assert call.count("reinterpret(" if fast else ".as_strided(") == 2, call  # residual, output
    residual = "reinterpret(arg3, (9, 12)" if fast else "arg3.as_strided((9, 12)"
    assert f", arg2, {residual}" in call, call


def test_a_permuted_epilogue_is_fused_only_in_the_gemms_storage_order():
    """q/k/v heads of a fused projection with its bias: the bias add is realized once in
    the GEMM's order (its epilogue) and the heads are views of it; a transposed copy
    that reads the GEMM elsewhere stays a kernel of its own."""

    def heads(x, w, b):
        qkv = F.linear(x, w, b).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return F.scaled_dot_product_attention(q, k, v)

    x, w, b = torch.randn(2, 5, 8), torch.randn(24, 8), torch.randn(24)
    reports = check(heads, x, w, b)
    assert kernel_count(reports) == 1, [rep.format() for rep in reports]
    assert len(reports[0].kernels[0].nodes) == 2
    transposed = check(lambda x, w, b: (x @ w + b).t().contiguous() * 2, x[0], w.t(), b)
    assert kernel_count(transposed) == 2, [rep.format() for rep in transposed]


def test_a_bfloat16_template_rounds_its_result_to_nearest():
    """The template's float32 tile with its epilogue is rounded once, to nearest even, into
    bfloat16 (the Triton interpreter's own cast truncates: about every other element was
    one ulp off toward zero)."""
    g = torch.Generator().manual_seed(0)
    a, b, c, r = (torch.randn(*s, generator=g) for s in ((10, 32), (32, 24), (24,), (10, 24)))
    ab, bb, cb, rb = (t.bfloat16() for t in (a, b, c, r))
    fn = lambda a, b, c, r: torch.addmm(c, a, b) + r  # noqa: E731
    actual, reports = compiled_reports(fn, ab, bb, cb, rb)
    assert kernel_count(reports) == 1 and len(reports[0].kernels[0].nodes) == 2
    once = (ab.float() @ bb.float() + cb.float() + rb.float()).bfloat16()
    ulp = torch.finfo(torch.bfloat16).eps * once.float().abs()
    assert ((actual.float() - once.float()).abs() <= ulp).all()
    assert (actual == once).float().mean() > 0.97


def test_a_rounding_inside_a_float32_epilogue_is_kept():
    """``(a @ b).to(bfloat16).float() * 3`` rounds in eager; the epilogue matcher dropped
    float casts (math runs in float32), so a fused epilogue skipped the rounding (found by
    a random program's backward). Such a chain is not fused now; a bfloat16 chain still
    is (``test_a_bfloat16_template_rounds_its_result_to_nearest``)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 32, generator=g), torch.randn(32, 8, generator=g)

    def fn(a, b):
        return (a @ b).to(torch.bfloat16).float() * 3

    actual, _ = compiled_reports(fn, a, b)
    # each element is 3 times a bfloat16 value (exact in float32), as in eager
    assert torch.equal((actual / 3).bfloat16().float(), actual / 3)
    torch.testing.assert_close(actual, fn(a, b), rtol=1e-2, atol=1e-2)
