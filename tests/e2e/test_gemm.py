"""GEMMs through torch.compile: template nodes, epilogues fused into them, autotuned."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import check, kernel_count

pytest.importorskip("tilefuse_autotune", reason="GEMM templates need tilefuse-autotune")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("m,n,k", [(1, 17, 33), (17, 1, 5), (33, 9, 1)])
def test_relu_addmm_is_one_kernel(m, n, k):
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.randn(n)
    reports = check(lambda a, b, c: torch.relu(a @ b + c), a, b, c)
    assert kernel_count(reports) == 1
    assert reports[0].kernels[0].kind == "template:mm"
    assert len(reports[0].kernels[0].nodes) == 2  # the GEMM and its epilogue


def test_linear_with_residual_and_transposed_weight():
    x, w, bias, res = torch.randn(9, 16), torch.randn(8, 16), torch.randn(8), torch.randn(9, 8)
    reports = check(lambda x, w, b, r: F.gelu(F.linear(x, w, b)) + r, x, w, bias, res)
    assert kernel_count(reports) == 1


def test_bmm_and_unfusable_consumer_records_reason():
    a, b = torch.randn(2, 5, 7), torch.randn(2, 7, 3)
    reports = check(lambda a, b: torch.bmm(a, b).cumsum(-1), a, b)
    assert reports[0].kernels[0].kind == "template:bmm"
    y = torch.randn(5, 7)
    reports = check(lambda y, b: (y @ b[0]).sum(0), y, b)
    refusals = [r for r in reports[0].refusals if r.startswith("epilogue:")]
    assert refusals and "not a pointwise node" in refusals[0]


def test_addmm_keeps_the_product_in_the_input_dtype():
    """torch's addmm decomposition upcasts bf16 operands to float32 before the mm; ours not."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tilefuse.frontend.decompositions import decomposition_table

    bias, a, b = torch.randn(8).bfloat16(), torch.randn(4, 16).bfloat16(), torch.randn(16, 8)
    traced = make_fx(torch.addmm, decomposition_table=decomposition_table())(bias, a, b.bfloat16())
    mms = [n for n in traced.graph.nodes if n.target is torch.ops.aten.mm.default]
    assert len(mms) == 1
    assert all(arg.meta["val"].dtype == torch.bfloat16 for arg in mms[0].args)


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1)])
def test_addmm_scalars_and_nan_bias_with_beta_zero(beta, alpha):
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    bias = torch.full((3,), float("nan")) if beta == 0 else torch.randn(3)
    check(lambda c, a, b: torch.addmm(c, a, b, beta=beta, alpha=alpha), bias, a, b)


def _round_up_8(n: int) -> int | None:
    return -(-n // 8) * 8 if n % 8 else None


@pytest.fixture
def padded_rows_on_cpu(monkeypatch):
    """The CUDA rule of padded GEMM rows forced on the CPU for N % 8 != 0; returns the
    list of the strides every extern GEMM's result had."""
    from tilefuse import extern_gemm, plugin
    from tilefuse.frontend import gemm_rows

    monkeypatch.setattr(gemm_rows, "PADDED_ROW_DEVICES", ("cpu",))
    monkeypatch.setattr(gemm_rows, "padded_width", lambda dtype, n, numel: _round_up_8(n))
    monkeypatch.setattr(extern_gemm, "_padded_width", lambda op, b, out: _round_up_8(out.shape[-1]))
    strides: list[tuple[int, ...]] = []
    real_run = plugin.ExternChoice.run

    def spy(self, *inputs, out):
        strides.append(out.stride())
        return real_run(self, *inputs, out=out)

    monkeypatch.setattr(plugin.ExternChoice, "run", spy)
    return strides


def test_an_odd_n_product_keeps_padded_rows_written_in_place(padded_rows_on_cpu):
    """An ``mm`` whose N cuBLAS serves only slowly (GPT-2's 50257) gets a result with
    padded rows that the extern GEMM writes in place (two GEMMs reading a transposed
    weight as it is): a consumer reads through the padded stride, and the caller gets
    eager's dense strides (``view(-1)`` works). Here on CPU, with the CUDA rule forced
    for N % 8 != 0."""
    x, w = torch.randn(6, 16), torch.randn(11, 16)
    fn = lambda x, w: ((x @ w.t()).view(1, 6, 11), torch.softmax((x @ w.t()) * 2, -1))  # noqa: E731
    logits, probs = torch.compile(fn, backend="tilefuse")(x, w)
    want_logits, want_probs = fn(x, w)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(probs, want_probs)
    assert logits.stride() == want_logits.stride() and probs.stride() == want_probs.stride()
    torch.testing.assert_close(logits.view(-1), want_logits.view(-1))
    strides = padded_rows_on_cpu
    assert strides and all(s == (16, 1) for s in strides), strides


def test_padded_logits_train_and_keep_eager_strides_when_a_backward_returns_them(
    padded_rows_on_cpu,
):
    """A training forward with a padded-row GEMM result, returned to the caller and
    saved for the backward: the loss outside the graph backpropagates through it;
    the caller's logits and the gradients have eager's values and strides."""
    x0, w0 = torch.randn(6, 16), torch.randn(11, 16)
    seed = torch.randn(6, 11)

    def run(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        logits = fn(x, w)
        (logits * seed).sum().backward()
        return logits.detach(), x.grad, w.grad

    def fn(x, w):
        logits = x @ w.t()
        return logits * torch.tanh(logits)  # the backward reads logits: saved, padded

    got = run(torch.compile(fn, backend="tilefuse"))
    want = run(fn)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)
        assert g.stride() == e.stride()


def test_a_logits_gradient_gets_padded_rows_and_the_head_gemms_run_in_aligned_blocks(
    padded_rows_on_cpu, monkeypatch
):
    """A language model's head in training: the logits' gradient, which both backward
    GEMMs read (as it is, and transposed), is written with padded rows, so the input's
    gradient runs as aligned blocks of K and the weight's as aligned blocks of M (the
    CUDA rule forced on the CPU). Loss, gradients and their strides are eager's."""
    from tilefuse import extern_gemm

    monkeypatch.setattr(extern_gemm, "BLOCKED_DEVICES", ("cpu",))
    monkeypatch.setattr(extern_gemm, "padded_width", lambda dtype, n, numel: _round_up_8(n))
    blocks = []
    real = extern_gemm._run_in_blocks
    monkeypatch.setattr(
        extern_gemm, "_run_in_blocks", lambda i, blk, *r: blocks.append(blk) or real(i, blk, *r)
    )
    x0, w0 = torch.randn(8, 16), torch.randn(11, 16)
    target = torch.tensor([0, 3, 10, 7, 1, 1, 9, 2])

    def run(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss = fn(x, w)
        loss.backward()
        return loss.detach(), x.grad, w.grad

    def fn(x, w):
        return torch.nn.functional.cross_entropy(x @ w.t(), target)

    got = run(torch.compile(fn, backend="tilefuse"))
    want = run(fn)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)
        assert g.stride() == e.stride()
    assert sorted(blocks) == [("k", 8), ("m", 8)], blocks
    assert tilefuse.stats()["graphs_compiled"] >= 2 and tilefuse.stats()["graphs_fallen_back"] == 0


def test_a_reshaped_product_is_returned_as_a_view_not_copied():
    """``(a @ b).view(...)`` as a graph output (a language model's logits) is the GEMM's
    own buffer viewed, as in eager: no copy kernel, eager's strides."""
    a, b = torch.randn(12, 8), torch.randn(8, 5)
    reports = check(lambda a, b: (a @ b).view(1, 12, 5), a, b)
    assert kernel_count(reports) == 1, [r.format() for r in reports]
    assert reports[0].kernels[0].kind == "template:mm"


def test_the_wrapper_calls_a_plain_extern_gemm_directly(monkeypatch):
    """A plain ``mm`` the eager extern runs unchanged is called by the Python wrapper as
    ``torch.mm(a, b, out=buf)`` (one Python call less per GEMM); a cast, a strided
    result, a padded N or a symbolic size keep ``ExternChoice.run``."""
    import sympy

    from tilefuse import plugin
    from tilefuse.ir.nodes import Layout

    calls = []
    real_run = plugin.ExternChoice.run
    monkeypatch.setattr(
        plugin.ExternChoice,
        "run",
        lambda self, *a, out: calls.append(1) or real_run(self, *a, out=out),
    )
    a, b = torch.randn(6, 16), torch.randn(16, 5)
    check(lambda a, b: a @ b, a, b)
    assert calls == []

    def lay(size, stride, dtype=torch.float32, device="cpu"):
        return Layout(torch.device(device), dtype, tuple(size), tuple(stride))

    mm = plugin.ExternChoice("mm")
    assert mm.direct_op(lay((16, 5), (5, 1)), lay((6, 5), (5, 1))) is torch.mm
    assert mm.direct_op(lay((16, 5), (5, 1)), lay((6, 1), (1, 3))) is torch.mm  # size-1 dim
    assert mm.direct_op(lay((16, 5), (5, 1), torch.bfloat16), lay((6, 5), (5, 1))) is None
    assert mm.direct_op(lay((16, 5), (5, 1)), lay((6, 5), (8, 1))) is None
    s = sympy.Symbol("s0", positive=True, integer=True)
    assert mm.direct_op(lay((16, 5), (5, 1)), lay((s, 5), (5, 1))) is None
    big = lay((4096, 50257), (50257, 1), torch.bfloat16, "cuda")
    assert mm.direct_op(lay((768, 50257), (1, 768), torch.bfloat16, "cuda"), big) is None
    assert (
        plugin.ExternChoice("addmm").direct_op(lay((16, 5), (5, 1)), lay((6, 5), (5, 1)))
        is torch.addmm
    )


def test_an_odd_n_product_of_a_symbolic_m_keeps_padded_rows_too(padded_rows_on_cpu):
    """The padded rows of ``test_an_odd_n_product_keeps_padded_rows_written_in_place``
    where M is a symbolic size (a language model's tokens under dynamic shapes): without
    them, each call padded a copy of the weight and copied the result (an eager copy of
    0.48 ms per call in GPT-2 at 8x512 on the H200, against 0.22 ms for the static graph's
    one dense copy of its logits)."""
    w = torch.randn(11, 16)
    fn = lambda x: torch.softmax((x @ w.t()) * 2, -1)  # noqa: E731
    compiled = torch.compile(fn, backend="tilefuse")
    tilefuse.reset()
    for m in (6, 9, 20):
        x = torch.randn(m, 16)
        torch._dynamo.mark_dynamic(x, 0)
        got = compiled(x)
        torch.testing.assert_close(got, fn(x))
        assert got.stride() == (11, 1)
    assert tilefuse.stats()["graphs_compiled_symbolic"] == 1, tilefuse.stats()
    strides = padded_rows_on_cpu
    assert strides and all(s == (16, 1) for s in strides), strides


@pytest.mark.gpu
def test_an_autocast_head_training_step_runs_its_backward_gemms_in_aligned_blocks(monkeypatch):
    """An odd-vocabulary head (2053) under bf16 autocast on CUDA, with the real rule: both
    backward GEMMs read the logits' gradient with padded rows and run in aligned blocks;
    loss and gradients match eager autocast's."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from tilefuse import extern_gemm

    blocks = []
    real = extern_gemm._run_in_blocks
    monkeypatch.setattr(
        extern_gemm, "_run_in_blocks", lambda i, blk, *r: blocks.append(blk) or real(i, blk, *r)
    )
    g = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.randn(512, 768, device="cuda", generator=g)
    w0 = torch.randn(2053, 768, device="cuda", generator=g) / 30
    target = torch.randint(0, 2053, (512,), device="cuda", generator=g)

    def fn(x, w):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = x @ w.t()
        return F.cross_entropy(logits.float(), target)

    def run(f):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss = f(x, w)
        loss.backward()
        return loss.detach(), x.grad, w.grad

    def exact(x, w):  # the float32 reference both bf16 runs are measured against
        return F.cross_entropy(x @ w.t(), target)

    got, want, ref = run(torch.compile(fn, backend="tilefuse")), run(fn), run(exact)
    for a, e, r in zip(got, want, ref, strict=True):
        ours, eager = (a - r).abs().max().item(), (e - r).abs().max().item()
        assert ours <= 1.5 * eager + 1e-3 * r.abs().max().item(), (ours, eager)
    assert sorted(blocks) == [("k", 2048), ("m", 2048)], blocks
    assert tilefuse.stats()["graphs_fallen_back"] == 0
