"""The extern choice against hand-written eager PyTorch: ops, epilogues, dtypes, layouts."""

from __future__ import annotations

import pytest
import torch

from tilefuse import extern_gemm, plugin
from tilefuse_autotune import ExternChoice

Step = plugin.EpilogueStep
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _inputs(op, m, k, n, dtype):
    g = torch.Generator().manual_seed(1)
    if op == "bmm":
        args = [torch.randn(3, m, k, generator=g), torch.randn(3, k, n, generator=g)]
    else:
        args = [torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)]
    if op == "addmm":
        args.insert(0, torch.randn(n, generator=g))
    return [t.to(dtype) for t in args]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["mm", "addmm", "bmm"])
@pytest.mark.parametrize("shape", [(1, 7, 5), (13, 17, 19), (32, 1, 8)])
def test_plain_ops_match_eager(op, shape, dtype):
    args = _inputs(op, *shape, dtype)
    expected = {"mm": torch.mm, "addmm": torch.addmm, "bmm": torch.bmm}[op](*args)
    out = torch.empty_like(expected)
    ExternChoice(op).run(*args, out=out)
    torch.testing.assert_close(out, expected)


def test_epilogue_into_a_transposed_out_in_another_dtype():
    a, b = _inputs("mm", 9, 11, 6, torch.float32)
    bias = torch.randn(6)
    residual = torch.randn(6, 9).t()  # non-contiguous operand
    epi = plugin.Epilogue(
        steps=(Step("add_bias_n", operand=0), Step("gelu_tanh"), Step("add_matrix", operand=1)),
        operands=(plugin.TensorSpec.of(bias), plugin.TensorSpec.of(residual)),
        out_dtype="bfloat16",
    )
    out = torch.empty(6, 9, dtype=torch.bfloat16).t()
    ExternChoice("mm", epi).run(a, b, bias, residual, out=out)
    expected = (torch.nn.functional.gelu(a @ b + bias, approximate="tanh") + residual).bfloat16()
    torch.testing.assert_close(out, expected)


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="knows"):
        ExternChoice("conv")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", ["mm", "bmm"])
def test_a_half_epilogue_reads_the_unrounded_float32_product(op, dtype):
    """Steps apply to the float32 accumulator: one rounding at the end, as eager's ``addmm``
    and a fused template give, not a rounded product plus a rounded sum."""
    a, b = _inputs(op, 16, 64, 8, dtype)
    bias = torch.randn(8, generator=torch.Generator().manual_seed(2)).to(dtype)
    epilogue = plugin.Epilogue(
        (Step("add_bias_n", operand=0),), (plugin.TensorSpec.of(bias),), plugin.dtype_name(dtype)
    )
    out = torch.empty(*a.shape[:-1], 8, dtype=dtype)
    ExternChoice(op, epilogue).run(a, b, bias, out=out)
    product = getattr(torch, op)(a.double(), b.double())
    expected = (product + bias.double()).to(dtype)  # the exact result, rounded once
    torch.testing.assert_close(out, expected, rtol=torch.finfo(dtype).eps, atol=1e-6)
    twice = (getattr(torch, op)(a, b).float() + bias.float()).to(dtype)  # rounded twice
    assert (out != twice).any(), "this shape should tell one rounding from two"


def test_a_bare_cast_epilogue_is_not_written_in_place_into_another_dtype():
    """Autocast stores a bf16 GEMM as float32: an epilogue of no steps and another out
    dtype (``torch.mm(..., out=)`` refuses an out of another dtype)."""
    a, b = _inputs("mm", 5, 7, 3, torch.bfloat16)
    out = torch.empty(5, 3, dtype=torch.float32)
    ExternChoice("mm", plugin.Epilogue((), (), "float32")).run(a, b, out=out)
    torch.testing.assert_close(out, torch.mm(a, b).float())


@pytest.mark.parametrize("transposed", [False, True], ids=["row-major-b", "transposed-b"])
@pytest.mark.parametrize("op", ["mm", "bmm"])
def test_an_odd_n_runs_padded_with_the_same_values(op, transposed, monkeypatch):
    """An N that cuBLAS serves only slowly is padded with zero columns of B and the result
    cut back: the same values, with or without an epilogue, whatever B's majorness."""
    monkeypatch.setattr(extern_gemm, "_padded_width", lambda op, b, out: 16)
    g = torch.Generator().manual_seed(3)
    batch = (2,) if op == "bmm" else ()
    a = torch.randn(*batch, 5, 8, generator=g)
    b = torch.randn(*batch, 11, 8, generator=g).transpose(-1, -2)
    if not transposed:
        b = b.contiguous()
    expected = (torch.mm if op == "mm" else torch.bmm)(a, b)
    out = torch.empty_like(expected)
    ExternChoice(op).run(a, b, out=out)
    torch.testing.assert_close(out, expected)
    epi = plugin.Epilogue(steps=(Step("relu"),), operands=(), out_dtype="float32")
    ExternChoice(op, epi).run(a, b, out=out)
    torch.testing.assert_close(out, expected.relu())


def test_an_aligned_transposed_b_is_not_copied_its_columns_run_in_two_gemms(monkeypatch):
    """A column-major B whose columns start 16-byte aligned (``w.t()`` of a linear layer
    or a tied embedding) is read in place, as an aligned block of columns and the few left
    over; a row-major B or one of an odd leading dimension is still padded."""
    monkeypatch.setattr(extern_gemm, "_padded_width", lambda op, b, out: 16)
    pads = []
    real = extern_gemm._pad_columns
    monkeypatch.setattr(extern_gemm, "_pad_columns", lambda b, w: pads.append(1) or real(b, w))
    g = torch.Generator().manual_seed(5)
    a, w = torch.randn(6, 8, generator=g), torch.randn(11, 8, generator=g)
    out = torch.empty(6, 11)
    ExternChoice("mm").run(a, w.t(), out=out)
    torch.testing.assert_close(out, a @ w.t())
    assert pads == []
    ExternChoice("mm").run(a, w.t().contiguous(), out=out)
    torch.testing.assert_close(out, a @ w.t())
    assert pads == [1]
    odd = torch.randn(11, 9, generator=g)[:, :8]  # leading dimension of 36 bytes
    ExternChoice("mm").run(a, odd.t(), out=out)
    torch.testing.assert_close(out, a @ odd.t())
    assert pads == [1, 1]


@pytest.fixture
def blocks_on_cpu(monkeypatch):
    """The CUDA rule of aligned GEMM blocks forced on the CPU for any length that is no
    multiple of 8 (whatever the size); returns the list of blocks each run took."""
    monkeypatch.setattr(extern_gemm, "BLOCKED_DEVICES", ("cpu",))
    monkeypatch.setattr(
        extern_gemm, "padded_width", lambda dtype, n, numel: -(-n // 8) * 8 if n % 8 else None
    )
    taken = []
    real = extern_gemm._run_in_blocks
    monkeypatch.setattr(
        extern_gemm, "_run_in_blocks", lambda i, blk, *r: taken.append(blk) or real(i, blk, *r)
    )
    return taken


def _padded(rows: int, cols: int, width: int, dtype, g) -> torch.Tensor:
    """A ``rows x cols`` matrix with rows ``width`` elements apart (a padded-row buffer)."""
    return torch.randn(rows, width, generator=g).to(dtype)[:, :cols]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("out_dtype", ["same", "float32"])
def test_an_odd_k_with_aligned_operands_runs_in_blocks_rounded_once(
    blocks_on_cpu, dtype, out_dtype
):
    """A K of no 16-byte multiple, both operands aligned (the logits' gradient with padded
    rows times the embedding): an aligned GEMM plus a thin one summed in float32, then
    rounded once; a bare cast stores eager's rounded product. Unaligned operands are not
    split (splitting would not align them)."""
    g = torch.Generator().manual_seed(7)
    a, b = _padded(8, 11, 16, dtype, g), torch.randn(11, 16, generator=g).to(dtype)
    out_type = dtype if out_dtype == "same" else torch.float32
    out = torch.empty(8, 16, dtype=out_type)
    ExternChoice("mm").run(a, b, out=out)
    expected = torch.mm(a.float(), b.float()).to(dtype).to(out_type)
    torch.testing.assert_close(out, expected)
    assert blocks_on_cpu == [("k", 8)]
    ExternChoice("mm").run(a.contiguous(), b, out=out)  # rows 44 bytes apart: not aligned
    assert len(blocks_on_cpu) == 1


def test_no_split_where_it_would_not_align_anything(blocks_on_cpu):
    """K is split only where an operand holds it contiguously (a column-major ``a`` times
    a row-major ``b`` reads K strided in both), and never at zero (a K shorter than 16
    bytes, as in an outer product); a row-major ``a``'s odd M is not split."""
    g = torch.Generator().manual_seed(9)
    a = torch.randn(11, 16, generator=g).bfloat16().t()  # 16 x 11, column-major, K = 11
    b = torch.randn(11, 8, generator=g).bfloat16()  # row-major
    assert extern_gemm._aligned_block("mm", a, b) is None
    outer = torch.randn(3, 16, generator=g).bfloat16()
    assert extern_gemm._aligned_block("mm", outer.t(), torch.randn(3, 8).bfloat16()) is None
    rows = _padded(11, 16, 16, torch.bfloat16, g)  # row-major, M = 11, K = 16
    assert extern_gemm._aligned_block("mm", rows, torch.randn(16, 8).bfloat16()) is None
    out = torch.empty(16, 8, dtype=torch.bfloat16)
    ExternChoice("mm").run(a, b, out=out)
    torch.testing.assert_close(out, torch.mm(a, b))
    assert blocks_on_cpu == []


@pytest.mark.usefixtures("fresh_compile_state")
def test_a_symbolic_k_keeps_the_graph_symbolic_without_a_selector(blocks_on_cpu, monkeypatch):
    """``(x * 2).t() @ y`` with a dynamic row count (a weight gradient's K = B * T) on the
    extern GEMM: ``gemm_rows`` looks at the intermediate and the wrapper asks
    ``direct_op`` with a symbolic K, and neither specializes it: the graph compiles once,
    symbolically, and each call's result is eager's."""
    import tilefuse
    from tilefuse.codegen import templates

    monkeypatch.setattr(templates, "why_no_selector", lambda device: "no selector (test)")
    fn = lambda x, y: (x * 2).t() @ y  # noqa: E731
    compiled = torch.compile(fn, backend="tilefuse")
    for rows in (10, 12, 13):
        x, y = torch.randn(rows, 16), torch.randn(rows, 8)
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(y, 0)
        torch.testing.assert_close(compiled(x, y), fn(x, y))
    stats = tilefuse.stats()
    assert stats["graphs_compiled_symbolic"] == 1 and stats["symbolic_fallbacks"] == 0, stats


@pytest.mark.parametrize("steps", [(), (Step("relu"),)], ids=["plain", "relu"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=str)
def test_an_odd_m_of_a_column_major_a_runs_as_two_row_blocks(blocks_on_cpu, steps, out_dtype):
    """``grad_logits.t() @ x`` (the head's weight gradient): a column-major ``a`` whose M
    is no 16-byte multiple runs as an aligned block of rows and the rest; with or without
    an epilogue, into the GEMM's dtype or a float32 result."""
    g = torch.Generator().manual_seed(8)
    a = _padded(16, 11, 24, torch.bfloat16, g).t()  # 11 x 16, column-major, lead 48 bytes
    b = torch.randn(16, 8, generator=g).bfloat16()
    epi = plugin.Epilogue(steps=steps, operands=(), out_dtype=str(out_dtype).split(".")[-1])
    out = torch.empty(11, 8, dtype=out_dtype)
    ExternChoice("mm", epi).run(a, b, out=out)
    acc = torch.mm(a.float(), b.float())
    expected = acc.relu() if steps else acc.bfloat16()
    torch.testing.assert_close(out.float(), expected.float(), rtol=1.6e-2, atol=1e-2)
    assert blocks_on_cpu == [("m", 8)]


class _CudaLike:
    """What ``_padded_width`` reads of a result tensor, as a large CUDA one has it."""

    is_cuda = True

    def __init__(self, shape, dtype) -> None:
        self.shape, self.dtype = shape, dtype

    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def test_padding_is_asked_for_large_odd_n_on_cuda_only():
    bf16, fp16 = torch.empty(1, dtype=torch.bfloat16), torch.empty(1, dtype=torch.float16)
    big = torch.empty(4096, 50257, dtype=torch.bfloat16, device="meta")
    assert extern_gemm._padded_width("mm", bf16, big) is None  # not a CUDA tensor
    assert extern_gemm._padded_width("mm", bf16, torch.empty(4, 7)) is None
    # On CUDA: N rounded up to 16 bytes of the GEMM's half type, for mm and bmm only.
    assert extern_gemm._padded_width("mm", bf16, _CudaLike((4096, 50257), torch.bfloat16)) == 50264
    assert extern_gemm._padded_width("bmm", fp16, _CudaLike((2, 2048, 1001), torch.float16)) == 1008
    big_bf16 = _CudaLike((4096, 50257), torch.bfloat16)
    assert extern_gemm._padded_width("addmm", bf16, big_bf16) is None
    assert extern_gemm._padded_width("mm", bf16, _CudaLike((4096, 50264), torch.bfloat16)) is None
    # The GEMM's dtype decides, not the result's: autocast's bf16 GEMM stored as float32.
    assert extern_gemm._padded_width("mm", bf16, _CudaLike((4096, 50257), torch.float32)) == 50264
    fp32 = torch.empty(1)
    assert extern_gemm._padded_width("mm", fp32, _CudaLike((4096, 50257), torch.bfloat16)) is None
    small = _CudaLike((16, 50257), torch.bfloat16)
    assert extern_gemm._padded_width("mm", bf16, small) is None


@pytest.mark.gpu
@pytest.mark.parametrize("steps", [(), (Step("gelu_tanh"),)], ids=["plain", "gelu"])
def test_odd_vocabulary_head_matches_eager_on_cuda(steps):
    """GPT-2's LM head shape class (N odd, bf16): run padded, the same values."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(512, 768, device="cuda", generator=g).bfloat16()
    w = torch.randn(2053, 768, device="cuda", generator=g).bfloat16()
    epi = plugin.Epilogue(steps=steps, operands=(), out_dtype="bfloat16")
    out = torch.empty(512, 2053, dtype=torch.bfloat16, device="cuda")
    assert extern_gemm._padded_width("mm", w.t(), out) == 2056
    ExternChoice("mm", epi).run(a, w.t(), out=out)
    acc = torch.mm(a.float(), w.t().float())
    expected = torch.nn.functional.gelu(acc, approximate="tanh") if steps else acc
    torch.testing.assert_close(out.float(), expected, rtol=1.6e-2, atol=2e-2)


@pytest.mark.gpu
def test_the_head_backward_runs_in_aligned_blocks_on_cuda():
    """The two backward GEMMs of an odd-vocabulary head (bf16, N = 2053 > 1M results),
    reading the logits' gradient with padded rows: split along K and along M, the same
    values as eager's GEMMs on dense rows."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    dense = torch.randn(512, 2053, device="cuda", generator=g).bfloat16()
    grad = torch.empty(512, 2056, device="cuda", dtype=torch.bfloat16)[:, :2053]
    grad.copy_(dense)
    w = torch.randn(2053, 768, device="cuda", generator=g).bfloat16()
    x = torch.randn(512, 768, device="cuda", generator=g).bfloat16()
    assert extern_gemm._aligned_block("mm", grad, w) == ("k", 2048)
    assert extern_gemm._aligned_block("mm", grad.t(), x) == ("m", 2048)
    assert extern_gemm._aligned_block("mm", dense, w) is None  # rows 4106 bytes apart
    grad_x = torch.empty(512, 768, device="cuda", dtype=torch.bfloat16)
    ExternChoice("mm").run(grad, w, out=grad_x)
    _no_worse_than_eager(grad_x, dense, w)
    grad_w = torch.empty(2053, 768, device="cuda", dtype=torch.float32)  # autocast's cast
    ExternChoice("mm").run(grad.t(), x, out=grad_w)
    _no_worse_than_eager(grad_w, dense.t(), x)


def _no_worse_than_eager(out, a, b):
    """``out`` (``a @ b``) is as close to the float32 product as eager's bf16 ``mm`` is,
    within bf16's own rounding: cuBLAS's bf16 GEMM may reduce in reduced precision, so
    eager is not the exact reference (at K = 2053 it is several ulps off)."""
    exact = torch.mm(a.float(), b.float())
    ours = (out.float() - exact).abs().max().item()
    eager = (torch.mm(a, b).float() - exact).abs().max().item()
    assert ours <= 1.5 * eager + 2**-8 * exact.abs().max().item(), (ours, eager)
