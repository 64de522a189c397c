"""Symbolic sizes on a real GPU: one compile for every size, compiled Triton kernels (not
the interpreter) whose size arguments Triton specializes differently from call to call
(divisible by 16 or not), and a size past 2**31 elements after a small first size.

Run on a CUDA machine with ``pytest -m gpu tests/e2e/test_gpu_symbolic.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import assert_same, check_forward_backward_over_lengths
from tests.e2e.test_models import Block

pytestmark = pytest.mark.gpu
# Sizes Triton specializes differently (multiples of 16 or not), back and forth.
SIZES = [5, 16, 17, 32, 33, 48, 7, 1000, 1024, 4097, 16, 5]


def _fresh() -> None:
    torch._dynamo.reset()
    tilefuse.reset()


def _assert_symbolic(graphs: int) -> None:
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["graphs_compiled"] == graphs == stats["graphs_compiled_symbolic"], stats
    assert stats["specializations_compiled"] == 0, stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_pointwise_and_reductions_over_sizes(dtype):
    def fn(x, w):
        h = F.gelu(x * w + 1)
        return h, torch.softmax(h, -1), x.float().sum(0), x.amax(-1), x.var(-1)

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse")
    w = torch.randn(384, device="cuda", dtype=dtype)
    for n in SIZES:
        x = torch.randn(n, 384, device="cuda", dtype=dtype)
        torch._dynamo.mark_dynamic(x, 0)
        actual = compiled(x, w)
        expected = fn(x, w)
        for a, e in zip(actual, expected):
            tol = 5e-2 if dtype == torch.bfloat16 else 1e-4
            torch.testing.assert_close(a, e, rtol=tol, atol=tol)
    _assert_symbolic(1)


def test_symbolic_row_length_reductions():
    def fn(x):
        return torch.softmax(x, -1), x.sum(-1), x.argmax(-1)

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse")
    for n in [100, 16, 17, 8192, 8193, 40000, 3]:
        x = torch.randn(67, n, device="cuda")
        torch._dynamo.mark_dynamic(x, 1)
        assert_same(compiled(x), fn(x))
    _assert_symbolic(1)


def test_sizes_seen_before_launch_through_their_own_entries(monkeypatch):
    """A size called again launches through the straight-line entry kept for it (one per
    size, up to ``MAX_SIZED_ENTRIES``), with its own extents and grid: every call still
    matches eager, the small size between two large ones included."""
    from tilefuse_triton.scheduling import TritonKernel

    hits = []
    remember = TritonKernel._remember_entry

    def remember_counted(self, sizes, launcher, values, grid):
        remember(self, sizes, launcher, values, grid)
        entry = self._sized_entries.get(sizes)
        if entry is not None:

            def counted(*tensors):
                hits.append(entry(*tensors))
                return hits[-1]

            self._sized_entries[sizes] = counted

    monkeypatch.setattr(TritonKernel, "_remember_entry", remember_counted)

    def fn(x):
        return torch.softmax(x * 2, -1), x.sum(0)

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse")
    for n in [33, 4096, 33, 4096, 33, 7, 4096]:
        x = torch.randn(n, 96, device="cuda")
        torch._dynamo.mark_dynamic(x, 0)
        assert_same(compiled(x), fn(x))
    _assert_symbolic(1)
    assert hits and all(hits), "no call took a kept entry"


def test_more_than_two_to_the_31_elements_after_a_small_first_size():
    def fn(x):
        return x * 2 + 1

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse")
    for rows in [4, 2049]:  # 2049 * 2**20 > 2**31 elements
        x = torch.ones(rows, 1 << 20, device="cuda", dtype=torch.bfloat16)
        torch._dynamo.mark_dynamic(x, 0)
        out = compiled(x)
        assert out.shape == x.shape
        assert bool((out == 3).all()), "a wrong element: 32-bit index overflow?"
        del out, x
    _assert_symbolic(1)


def test_transformer_block_forward_backward_over_sequence_lengths():
    lengths = [8, 16, 17, 64, 65, 128, 9]
    check_forward_backward_over_lengths(Block(causal=True).cuda(), lengths, device="cuda")
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["graphs_compiled_symbolic"] == 2, stats  # forward and backward


@pytest.mark.parametrize("mode", ["default", "quick"])
def test_linear_epilogues_over_sizes_pick_a_kernel_per_size_bucket(mode, monkeypatch, tmp_path):
    """A symbolic-size GEMM takes its epilogue and picks its kernel per bucket of the
    size: cuBLASLt's bias + relu unmeasured (default), or a measured winner (quick:
    Triton templates compete, run at sizes other than the ones they were tuned for)."""
    from tilefuse.report import collect_reports

    monkeypatch.setenv("TILEFUSE_AUTOTUNE", mode)
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    lin = torch.nn.Linear(256, 384, device="cuda", dtype=torch.bfloat16)

    def fn(x):
        return torch.relu(lin(x))

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse")
    with torch.no_grad(), collect_reports() as reports:
        for n in [40, 33, 64, 300, 17, 1000]:
            x = torch.randn(2, n, 256, device="cuda", dtype=torch.bfloat16)
            torch._dynamo.mark_dynamic(x, 1)
            torch.testing.assert_close(compiled(x), fn(x), rtol=2e-2, atol=2e-2)
    _assert_symbolic(1)
    (report,) = reports
    (gemm,) = [k for k in report.kernels if k.kind.startswith("template")]
    assert len(gemm.nodes) == 2, report.format()  # the product and its bias + relu
    # buckets of n: 64 (40, 33, 64), 512 (300), 32 (17), 1024 (1000)
    assert tilefuse.stats()["gemm_bucket_selections"] == 4, tilefuse.stats()
