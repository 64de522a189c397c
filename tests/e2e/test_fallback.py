"""Every program either compiles correctly or runs eagerly with one warning: a kernel
that fails to build, or a compiled graph that fails on its first call, sends that graph
to eager (strict mode raises instead), and ``tilefuse.stats()`` says which happened."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import check_grad
from tilefuse.codegen.wrapper import _ensure_layout
from tilefuse.errors import CompileError
from tilefuse_triton.scheduling import TritonKernel


def _program(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x) * 3 + 1


def _compile_and_run(x: torch.Tensor) -> torch.Tensor:
    torch._dynamo.reset()
    tilefuse.reset()
    return torch.compile(_program, backend="tilefuse")(x)


@pytest.fixture
def not_strict(monkeypatch):
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)


def test_kernel_build_failure_runs_the_graph_eagerly_with_one_warning(
    monkeypatch, not_strict, caplog
):
    def broken_build(self):
        raise RuntimeError("synthetic build failure")

    monkeypatch.setattr(TritonKernel, "build", broken_build)
    x = torch.randn(23)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out = _compile_and_run(x)
    torch.testing.assert_close(out, _program(x))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "synthetic build failure" in message and "sigmoid" in message
    assert tilefuse.stats()["graphs_fallen_back"] == 1
    assert tilefuse.stats()["graphs_compiled"] == 0


def test_kernel_build_failure_raises_in_strict_mode(monkeypatch):
    monkeypatch.setattr("tilefuse.config.strict", lambda: True)

    def broken_build(self):
        raise RuntimeError("synthetic build failure")

    monkeypatch.setattr(TritonKernel, "build", broken_build)
    with pytest.raises(Exception, match="synthetic build failure") as info:
        _compile_and_run(torch.randn(23))
    assert isinstance(info.value, CompileError) or "CompileError" in str(info.value)


def test_first_call_failure_falls_back_for_good(monkeypatch, not_strict, caplog):
    calls = []

    def broken_call(self, *args):
        calls.append(self.name)
        raise RuntimeError("synthetic launch failure")

    monkeypatch.setattr(TritonKernel, "__call__", broken_call)
    x = torch.randn(23)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        compiled = torch.compile(_program, backend="tilefuse")
        torch._dynamo.reset()
        tilefuse.reset()
        first = compiled(x)
        second = compiled(x + 1)
    torch.testing.assert_close(first, _program(x))
    torch.testing.assert_close(second, _program(x + 1))
    assert len(calls) == 1, "after the first failure the kernel is never launched again"
    assert "synthetic launch failure" in caplog.text
    assert tilefuse.stats()["graphs_fallen_back"] == 1


def test_first_call_failure_raises_in_strict_mode(monkeypatch):
    monkeypatch.setattr("tilefuse.config.strict", lambda: True)

    def broken_call(self, *args):
        raise RuntimeError("synthetic launch failure")

    monkeypatch.setattr(TritonKernel, "__call__", broken_call)
    with pytest.raises(RuntimeError, match="synthetic launch failure"):
        _compile_and_run(torch.randn(23))


def test_stats_count_compiled_graphs_kernels_and_externs():
    x = torch.randn(4, 9)
    torch._dynamo.reset()
    tilefuse.reset()
    fn = torch.compile(lambda x: torch.cumsum(x, 1).relu() * 2, backend="tilefuse")
    torch.testing.assert_close(fn(x), torch.cumsum(x, 1).relu() * 2)
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0
    assert stats["kernels_compiled"] >= 1 and stats["externs"] >= 1
    tilefuse.reset()
    assert all(v == 0 for v in tilefuse.stats().values())


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64], ids=str)
def test_a_dtype_kernels_lack_runs_as_an_extern_inside_the_graph(dtype):
    """Kernels have no uint16/32/64: a tensor of one filled with a constant (a ``KeyError``
    from the kernel writer, before) is an eager call in the compiled graph, beside the
    kernels."""

    def fn(x):
        bits = torch.full_like(x.view(dtype), 7)
        return bits, x * 2

    x = torch.randn(4, 8, dtype=torch.float64)  # 8 bytes: a view as any of them
    torch._dynamo.reset()
    tilefuse.reset()
    bits, doubled = torch.compile(fn, backend="tilefuse")(x)
    want_bits, want_doubled = fn(x)
    assert torch.equal(bits.view(torch.uint8), want_bits.view(torch.uint8))
    torch.testing.assert_close(doubled, want_doubled)
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0, stats
    assert stats["externs"] >= 1 and stats["kernels_compiled"] >= 1, stats


def test_extern_outputs_that_are_none_pass_through():
    # CUDA's flash attention returns None for outputs its meta function sizes as tensors.
    assert _ensure_layout(None, (2, 3), (3, 1)) is None
    t = torch.randn(3, 2).t()
    fixed = _ensure_layout(t, (2, 3), (3, 1))
    assert fixed.stride() == (3, 1) and torch.equal(fixed, t)


@torch.library.custom_op("tilefuse_test::distinct", mutates_args=())
def _distinct(x: torch.Tensor) -> torch.Tensor:
    return torch.unique(x)


@_distinct.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    # A size that holds only when every value differs: as wrong as the sizes fake tensors
    # get by running a data-dependent op without a fake kernel on zeros (index_fill's
    # backward calls _unique; the OpInfo sweep's index_fill-float32-5 on CUDA).
    return x.new_empty(x.shape)


@pytest.mark.parametrize("values", [[5.0, 5.0, 5.0], [1.0, 2.0, 2.0]], ids=["one", "two"])
def test_extern_output_of_another_shape_is_never_broadcast(values):
    # One distinct value was broadcast into the planned (3,): wrong values, no error.
    x = torch.tensor(values)
    torch._dynamo.reset()
    fn = torch.compile(lambda x: _distinct(x) * 2, backend="tilefuse")
    with pytest.raises(CompileError, match=r"distinct.default returned a tensor of shape"):
        fn(x)


def test_extern_output_of_another_shape_falls_back(not_strict):
    x = torch.tensor([5.0, 5.0, 5.0])
    torch._dynamo.reset()
    tilefuse.reset()
    out = torch.compile(lambda x: _distinct(x) * 2, backend="tilefuse")(x)
    torch.testing.assert_close(out, torch.tensor([10.0]))
    assert tilefuse.stats()["graphs_fallen_back"] == 1


def test_a_graph_on_a_device_no_backend_serves_runs_its_ops_as_externs(monkeypatch, caplog):
    """A CUDA program's CPU side graph (index preprocessing, say) on a machine whose
    backends serve only CUDA: strict mode compiles it, every op an eager call inside the
    graph, with one warning; the result is eager's."""

    def only_cuda() -> frozenset[str]:
        return frozenset({"cuda"})

    monkeypatch.setattr("tilefuse.dynamo_backend.served_device_types", only_cuda)
    monkeypatch.setattr("tilefuse.backend_selection.served_device_types", only_cuda)
    monkeypatch.setattr("tilefuse.frontend.lowering._warned_unserved", set())

    def fn(x, idx):
        return (x[idx] * 2).sum()

    x, idx = torch.randn(8), torch.tensor([1, 3, 3])
    torch._dynamo.reset()
    tilefuse.reset()
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out = torch.compile(fn, backend="tilefuse")(x, idx)
    torch.testing.assert_close(out, fn(x, idx))
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0
    assert stats["kernels_compiled"] == 0 and stats["externs"] >= 2
    warnings = [r for r in caplog.records if "no backend serves cpu" in r.getMessage()]
    assert len(warnings) == 1


def test_an_extern_result_of_another_dtype_than_its_meta_is_converted():
    """CPU ``native_layer_norm`` of a bfloat16 input with float32 weights (ConvNeXt under
    bf16 autocast) returns float32 statistics where its meta function says bfloat16. The
    backward's kernels were compiled for bfloat16 statistics: unconverted, they read the
    float32 bits as bfloat16 and the gradients came out non-finite."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 16).to(torch.bfloat16).requires_grad_()
    w = torch.randn(16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)

    def fn(x, w, b):
        return F.layer_norm(x, (16,), w, b).float().sin()

    _, mean, _ = torch.ops.aten.native_layer_norm(x.detach(), [16], w.detach(), b.detach(), 1e-5)
    assert mean.dtype == torch.float32  # the kernel's dtype, not the meta's bfloat16
    check_grad(fn, x, w, b, dtype=torch.bfloat16)
    t = torch.randn(2, 3)
    assert _ensure_layout(t, (2, 3), (3, 1), "op", torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.usefixtures("fresh_compile_state")
def test_an_eager_forward_hands_the_compiled_backward_the_dtypes_it_was_compiled_for(
    monkeypatch,
):
    """A forward that could not be compiled runs eagerly; its saved statistics (float32
    from CPU ``native_layer_norm``, bfloat16 by its meta) reach the backward tilefuse
    compiled for bfloat16 ones converted, not as float32 bits."""
    import tilefuse.pipeline

    real = tilefuse.pipeline.compile_graph
    calls = []

    def forward_fails(gm, *args, **kwargs):
        calls.append(gm)
        if len(calls) == 1:
            raise RuntimeError("test: the forward does not compile")
        return real(gm, *args, **kwargs)

    monkeypatch.setattr(tilefuse.pipeline, "compile_graph", forward_fails)
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)
    torch.manual_seed(0)
    x = torch.randn(4, 6, 16).to(torch.bfloat16)
    w, b = torch.randn(16), torch.randn(16)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    expected_leaves = [t.clone().requires_grad_() for t in (x, w, b)]

    def fn(x, w, b):
        return F.layer_norm(x, (16,), w, b).float().sin().sum()

    fn(*expected_leaves).backward()
    torch.compile(fn, backend="tilefuse")(*leaves).backward()
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 1 and stats["graphs_compiled"] == 1, stats
    for got, want in zip(leaves, expected_leaves):
        torch.testing.assert_close(got.grad, want.grad, rtol=2e-2, atol=2e-2)


def test_a_backward_falling_back_reads_saved_padded_rows_through_reshape(monkeypatch, not_strict):
    """A backward that runs eagerly (its kernel fails to build) reads what the compiled
    forward saved: here a GEMM result with padded rows (the CUDA rule forced on the CPU),
    which the backward views as one flat row. Eager's ``view`` refuses those strides; the
    fallback runs ``reshape`` in its place, and the gradients are eager's."""
    from tilefuse import extern_gemm
    from tilefuse.frontend import gemm_rows

    def pad8(n):
        return -(-n // 8) * 8 if n % 8 else None

    monkeypatch.setattr(gemm_rows, "PADDED_ROW_DEVICES", ("cpu",))
    monkeypatch.setattr(gemm_rows, "padded_width", lambda dtype, n, numel: pad8(n))
    monkeypatch.setattr(extern_gemm, "_padded_width", lambda op, b, out: pad8(out.shape[-1]))
    x0, w0 = torch.randn(6, 16), torch.randn(11, 16)

    def fn(x, w):
        return ((x @ w.t()).view(-1) ** 3).sum()

    def broken_build(self):
        raise RuntimeError("synthetic build failure")

    torch._dynamo.reset()
    tilefuse.reset()
    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss = torch.compile(fn, backend="tilefuse")(x, w)
    monkeypatch.setattr(TritonKernel, "build", broken_build)  # the backward compiles now
    loss.backward()
    x_eager, w_eager = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    fn(x_eager, w_eager).backward()
    torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-4, atol=1e-4)  # (cubes)
    torch.testing.assert_close(w.grad, w_eager.grad, rtol=1e-4, atol=1e-4)
    assert tilefuse.stats()["graphs_compiled"] == 1
    assert tilefuse.stats()["graphs_fallen_back"] == 1
