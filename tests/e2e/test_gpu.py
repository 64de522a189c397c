"""The compiler on a real GPU: the same differential checks at realistic sizes.

Run on a CUDA machine with ``pytest -m gpu`` (``nox -s gpu``); skipped elsewhere.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, compiled_reports, kernel_count

pytestmark = pytest.mark.gpu
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cuda(*shape, dtype=torch.float32):
    return torch.randn(*shape, device="cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pointwise_and_broadcast(dtype):
    x, b = cuda(1031, 257, dtype=dtype), cuda(257, dtype=dtype)
    reports = check(lambda x, b: F.gelu(x + b) * torch.sigmoid(x), x, b, dtype=dtype)
    assert kernel_count(reports) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", [1, 17, 1000, 8192, 20000])
def test_softmax_rows(dtype, cols):
    x = cuda(67, cols, dtype=dtype)
    reports = check(lambda x: torch.softmax(x, -1), x, dtype=dtype)
    assert kernel_count(reports) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_forward_is_one_kernel(dtype):
    x, w, b = cuda(129, 1024, dtype=dtype), cuda(1024, dtype=dtype), cuda(1024, dtype=dtype)
    reports = check(lambda x, w, b: F.layer_norm(x, (1024,), w, b), x, w, b, dtype=dtype)
    assert kernel_count(reports) == 1


def test_layer_norm_backward_of_one_element_rows_is_exactly_zero():
    # The output is the bias whatever x is: eager's kernel gives exactly 0, and so must a
    # kernel that contracts a product of the cancelling terms into an fma (it gave about
    # 2e-5: OpInfo layer_norm-float32-2).
    x, w, b = (cuda(33, 1).requires_grad_() for _ in range(3))
    fn = torch.compile(lambda x, w, b: F.layer_norm(x, (1,), w[0], b[0]), backend="tilefuse")
    (grad,) = torch.autograd.grad(fn(x, w, b), x, torch.randn_like(x))
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("dims", [0, 1, (0, 1)])
def test_reductions(dims):
    x = cuda(513, 1025)
    check(lambda x: (x.sum(dims), x.amax(dims), x.var(dims), x.mean(dims)), x)
    check(lambda x: (x.argmax(0), x.argmin(1), (x > 2).any(1)), x)


def test_transpose_add_is_one_tiled_kernel():
    x = cuda(1024, 1024)
    reports = check(lambda x: x + x.t(), x)
    assert kernel_count(reports) == 1
    assert reports[0].kernels[0].kind == "pointwise-2d"


def test_column_sum():
    check(lambda x: x.sum(0), cuda(4096, 1000))


def test_cross_entropy_forward_backward():
    logits = cuda(64, 1000).requires_grad_()
    target = torch.randint(0, 1000, (64,), device="cuda")
    check_grad(lambda x: F.cross_entropy(x, target).reshape(1), logits)


@pytest.mark.parametrize("vocab", [1000, 50257], ids=["persistent", "looped"])
def test_cross_entropy_and_log_softmax_special_values(vocab):
    """The decomposed log_softmax (recomputed in the backward) and logsumexp at a GPT-2
    vocabulary: rows holding +inf, only -inf, NaN, and large logits."""
    x = cuda(8, vocab) * 4
    x[0, 3] = float("inf")
    x[1] = float("-inf")
    x[2, 5] = float("nan")
    x[3] += 1e4
    check(lambda x: (F.log_softmax(x, -1), torch.logsumexp(x, -1), F.softmax(x, -1)), x)
    logits = (cuda(16, vocab) * 3).requires_grad_()
    target = torch.randint(0, vocab, (16,), device="cuda")
    check_grad(lambda x: F.cross_entropy(x, target).reshape(1), logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gemm_with_epilogue(dtype):
    """The fused kernel rounds once, eager rounds ``a @ b`` before adding ``c``: compare
    with a float32 reference, allowing one output-dtype ulp of the largest product
    (and at least 1e-4 for float32's own summation-order differences)."""
    a, b, c = cuda(255, 1000, dtype=dtype), cuda(1000, 17, dtype=dtype), cuda(17, dtype=dtype)

    def fn(a, b, c):
        return torch.relu(a @ b + c)

    actual, reports = compiled_reports(fn, a, b, c)
    product = a.float() @ b.float()
    expected = torch.relu(product + c.float()).to(dtype)
    ulp = torch.finfo(dtype).eps * product.abs().max().item()
    # float32: the summation order over k = 1000 differs from cuBLAS's; 1e-4 covers it.
    atol = max(ulp, 1e-4)
    rtol = max(torch.finfo(dtype).eps, 1e-4)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    assert kernel_count(reports) == 1


def test_transformer_block_training():
    torch.manual_seed(0)
    dim, heads = 64, 4

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = torch.nn.LayerNorm(dim)
            self.qkv = torch.nn.Linear(dim, 3 * dim)
            self.proj = torch.nn.Linear(dim, dim)
            self.ln2 = torch.nn.LayerNorm(dim)
            self.up = torch.nn.Linear(dim, 4 * dim)
            self.down = torch.nn.Linear(4 * dim, dim)

        def forward(self, x):
            bsz, seq, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(dim, -1)
            q, k, v = (t.reshape(bsz, seq, heads, -1).transpose(1, 2) for t in (q, k, v))
            att = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, -1)
            y = (att @ v).transpose(1, 2).reshape(bsz, seq, dim)
            x = x + self.proj(y)
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    block = Block().cuda()
    x = cuda(2, 32, dim).requires_grad_()
    check_grad(block, x)
