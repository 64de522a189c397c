"""The C++ wrapper on a real GPU, against eager, parametrized over both wrappers.

Run on a CUDA machine with ``pytest -m gpu tests/e2e/test_gpu_cpp_wrapper.py``; skipped
elsewhere. With ``cpp_wrapper`` each graph must really run through the C++ wrapper
(``stats()["cpp_wrappers"]``, no fallback), built by the system compiler.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import check, compiled_reports, kernel_count

pytestmark = pytest.mark.gpu
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(params=["python", "cpp"])
def wrapper(request, monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TILEFUSE_CPP_WRAPPER", "1" if request.param == "cpp" else "0")
    return request.param


def _assert_wrapper(wrapper: str, reports) -> None:
    stats = tilefuse.stats()
    assert stats["cpp_wrapper_fallbacks"] == 0, stats
    if wrapper == "cpp":
        assert stats["cpp_wrappers"] == len(reports) >= 1, stats
        assert all(r.wrapper_language == "c++" for r in reports)
    else:
        assert stats["cpp_wrappers"] == 0
        assert all(r.wrapper_language == "python" for r in reports)


def cuda(*shape, dtype=torch.float32):
    return torch.randn(*shape, device="cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pointwise(wrapper, dtype):
    x, b = cuda(1031, 257, dtype=dtype), cuda(257, dtype=dtype)
    reports = check(lambda x, b: F.gelu(x + b) * torch.sigmoid(x), x, b, dtype=dtype)
    assert kernel_count(reports) == 1
    _assert_wrapper(wrapper, reports)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reductions_and_buffer_reuse(wrapper, dtype):
    x = cuda(67, 1000, dtype=dtype)

    def fn(x):
        y = torch.softmax(x, -1)
        z = (y * 2).sum(0)
        return z, x.amax(1), x.var(1)

    reports = check(fn, x, dtype=dtype)
    _assert_wrapper(wrapper, reports)


def test_mm_as_eager_gemm_with_an_epilogue_kernel(wrapper, monkeypatch):
    # The C++ wrapper calls a GEMM that no template selector took through at::mm_out.
    monkeypatch.setattr("tilefuse.codegen.templates.why_no_selector", lambda device: "test")
    a, b = cuda(129, 65), cuda(65, 33)
    reports = check(lambda a, b: torch.relu(a @ b) + 1, a, b)
    _assert_wrapper(wrapper, reports)


@pytest.mark.parametrize("layout", ["tied-weight", "row-major"])
def test_an_odd_vocabulary_head_is_padded_by_either_wrapper(wrapper, monkeypatch, layout):
    """GPT-2's LM head class (bf16, N = 2053, over 2**20 results) run by the eager GEMM:
    both wrappers pad N (the C++ one in ``mm_into``) and match eager."""
    monkeypatch.setattr("tilefuse.codegen.templates.why_no_selector", lambda device: "test")
    a, w = cuda(512, 768, dtype=torch.bfloat16), cuda(2053, 768, dtype=torch.bfloat16)
    if layout == "tied-weight":
        reports = check(lambda a, w: a @ w.t(), a, w, dtype=torch.bfloat16)
    else:
        reports = check(lambda a, b: a @ b, a, w.t().contiguous(), dtype=torch.bfloat16)
    if wrapper == "cpp":
        assert "tilefuse_wrapper::mm_into(" in reports[0].cpp_wrapper
    _assert_wrapper(wrapper, reports)


def test_gemms_reading_an_odd_row_length_run_in_aligned_blocks_by_either_wrapper(
    wrapper, monkeypatch
):
    """A computed bf16 operand with rows of 2053 elements, read as it is (K = 2053) and
    transposed (M = 2053), as a language model's head gradient is: it gets padded rows and
    both wrappers run the GEMMs in aligned blocks (the C++ one in ``mm_in_blocks``), as
    close to the float32 products as eager's bf16 GEMMs are."""
    from tilefuse import extern_gemm

    monkeypatch.setattr("tilefuse.codegen.templates.why_no_selector", lambda device: "test")
    blocks = []
    real = extern_gemm._run_in_blocks
    monkeypatch.setattr(
        extern_gemm, "_run_in_blocks", lambda i, blk, *r: blocks.append(blk) or real(i, blk, *r)
    )
    x = cuda(512, 2053, dtype=torch.bfloat16)
    w, v = cuda(2053, 64, dtype=torch.bfloat16), cuda(512, 64, dtype=torch.bfloat16)

    def fn(x, w, v):
        g = torch.tanh(x)
        return g @ w, g.t() @ v

    got, reports = compiled_reports(fn, x, w, v)
    exact, eager = fn(x.float(), w.float(), v.float()), fn(x, w, v)
    for ours, theirs, ref in zip(got, eager, exact, strict=True):
        err, eager_err = (ours.float() - ref).abs().max(), (theirs.float() - ref).abs().max()
        assert err <= 1.5 * eager_err + 2**-8 * ref.abs().max(), (err, eager_err)
    if wrapper == "cpp":  # (the C++ wrapper's blocks are not observable from Python)
        assert "TILEFUSE_HAS_MM_OUT_DTYPE 1" in reports[0].cpp_wrapper
        assert reports[0].cpp_wrapper.count("tilefuse_wrapper::mm_into(") == 2
    else:
        assert sorted(blocks) == [("k", 2048), ("m", 2048)], blocks
    _assert_wrapper(wrapper, reports)


def test_repeated_calls_and_unaligned_inputs(wrapper):
    fn = torch.compile(lambda x: (x.sin() * 3).sum(1), backend="tilefuse")
    x = cuda(64, 100)
    for _ in range(3):
        torch.testing.assert_close(fn(x), (x.sin() * 3).sum(1))
    storage = cuda(64 * 100 + 1)
    unaligned = storage[1:].view(64, 100)  # the C++ wrapper hands it to the Python one
    torch.testing.assert_close(fn(unaligned), (unaligned.sin() * 3).sum(1))


class FirstChoiceOf:
    """A template selector that takes the first choice of one provider, unmeasured, so
    that a test knows which template kernel the C++ wrapper launches."""

    name = "test-first-choice"

    def __init__(self, provider) -> None:
        self.provider = provider
        self.api_version = provider.api_version

    def accepts(self, op, inputs, layout, epilogue):
        return self.provider.accepts(op, inputs, layout, epilogue)

    def select(self, op, inputs, layout, epilogue):
        choice = next(iter(self.provider.choices(op, inputs, layout, epilogue)))
        label = f"{self.provider.name}/{choice.name}"
        return SimpleNamespace(choice=choice, label=label, summary=f"test: took {label}")


def _only(monkeypatch, provider) -> None:
    selector = FirstChoiceOf(provider)
    monkeypatch.setattr("tilefuse.codegen.templates.template_selector", lambda: selector)


def _template_kernels(reports, provider: str) -> list:
    found = [k for r in reports for k in r.kernels if k.kind.startswith("template")]
    assert found and all(k.backend.startswith(f"{provider}/") for k in found), found
    return found


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_gemm_templates(wrapper, dtype, monkeypatch):
    # Launched from C++ with the graph's sizes and strides baked in: odd sizes, a
    # transposed operand, a fused bias + gelu epilogue and a bmm.
    from tilefuse_triton.gemm import PROVIDER

    _only(monkeypatch, PROVIDER)
    a, b, bias = cuda(129, 65, dtype=dtype), cuda(33, 65, dtype=dtype), cuda(33, dtype=dtype)
    x, y = cuda(3, 17, 40, dtype=dtype), cuda(3, 40, 24, dtype=dtype)

    def fn(a, b, bias, x, y):
        return F.gelu(a @ b.t() + bias), torch.bmm(x, y) * 2

    reports = check(fn, a, b, bias, x, y, dtype=dtype)
    assert len(_template_kernels(reports, "triton")) == 2
    _assert_wrapper(wrapper, reports)


def test_cutlass_gemm_template(wrapper, monkeypatch):
    # One nvcc build (tens of seconds); the C++ wrapper calls the kernel library's C entry.
    from tilefuse_cuda.provider import PROVIDER
    from tilefuse_cuda.toolchain import sm90_device_reason

    if sm90_device_reason("cuda") is not None or not PROVIDER.supports("mm", "cuda:0"):
        pytest.skip(f"CUTLASS choices need an sm_90 GPU, nvcc and CUTLASS: {PROVIDER.version}")
    _only(monkeypatch, PROVIDER)
    bf16 = torch.bfloat16
    a, b, bias = cuda(256, 128, dtype=bf16), cuda(128, 192, dtype=bf16), cuda(192, dtype=bf16)
    reports = check(lambda a, b, bias: torch.relu(a @ b + bias), a, b, bias, dtype=bf16)
    assert len(_template_kernels(reports, "cuda")) == 1
    _assert_wrapper(wrapper, reports)


def test_auto_trains_on_the_python_wrapper_then_on_the_background_built_cpp_one(
    monkeypatch, tmp_path
):
    """The default: a training step's forward and backward graphs run the Python wrapper
    until their C++ wrappers, built in the background, load; results match eager before
    and after the swap."""
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEFUSE_CPP_WRAPPER", raising=False)
    torch._dynamo.reset()
    tilefuse.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.LayerNorm(256), torch.nn.Linear(256, 8)
    ).cuda()
    x = cuda(96, 64)

    def step(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(x).float().square().mean()
        loss.backward()
        return [loss.detach(), *(p.grad.clone() for p in model.parameters())]

    expected = step(model)
    compiled = torch.compile(model, backend="tilefuse")
    for got, want in zip(step(compiled), expected):  # the Python wrappers
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert tilefuse.wait_for_builds(timeout=300)
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == stats["cpp_wrappers"] == 2, stats
    assert stats["cpp_wrapper_fallbacks"] == 0, stats
    for _ in range(2):  # the C++ wrappers
        for got, want in zip(step(compiled), expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
