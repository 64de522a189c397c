"""Reductions and normalisations against eager: dims, keepdim, dtypes, long rows,
non-contiguous and zero-size inputs, forward and backward, and fusion (kernel counts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, compiled_reports, kernel_count

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# (shape, dims, keepdim): single, multiple, negative, all dims; inner and outer (dim 0).
DIM_CASES = [
    ((7, 13), -1, False),
    ((7, 13), 0, True),
    ((5, 33, 17), 1, False),
    ((5, 33, 17), (0, 2), True),
    ((5, 33, 17), (-1, -2), False),
    ((5, 33, 17), None, False),
    ((1, 13), 0, False),
]
DIM_IDS = ["last", "dim0-keep", "mid", "outer+inner-keep", "neg-multi", "all", "size1-dim"]

SIMPLE = {
    "sum": lambda x, d, k: x.sum(d, keepdim=k) if d is not None else x.sum(),
    "mean": lambda x, d, k: x.mean(d, keepdim=k) if d is not None else x.mean(),
    "amax": lambda x, d, k: x.amax(d if d is not None else (), keepdim=k),
    "amin": lambda x, d, k: x.amin(d if d is not None else (), keepdim=k),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "dims", "keepdim"), DIM_CASES, ids=DIM_IDS)
@pytest.mark.parametrize("name", sorted(SIMPLE))
def test_simple_reductions(name, shape, dims, keepdim, dtype):
    x = torch.randn(shape).to(dtype)
    check(lambda x: SIMPLE[name](x, dims, keepdim), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("dims", "keepdim"), [(-1, False), (0, True), (None, False)])
def test_prod(dims, keepdim, dtype):
    # values near 1 so the product neither overflows nor vanishes in half precision
    x = (1 + 0.1 * torch.randn(7, 13)).to(dtype)
    if dims is None:
        check(lambda x: x.prod(), x, dtype=dtype)
    else:
        check(lambda x: x.prod(dims, keepdim=keepdim), x, dtype=dtype)


def test_sum_dtype_argument_and_int_input():
    x = torch.randint(-50, 50, (7, 13), dtype=torch.int32)
    h = torch.randn(7, 13).half()
    check(
        lambda x, h: (
            x.sum(1),
            x.sum(0, dtype=torch.float32),
            h.sum(-1, dtype=torch.float32),
            x.prod(1),
        ),
        x,
        h,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize(
    ("shape", "dim", "keepdim"),
    [((7, 13), -1, False), ((7, 13), 0, True), ((5, 33, 17), 1, False), ((5, 33, 17), None, False)],
)
def test_argmax_argmin(name, shape, dim, keepdim, dtype):
    # distinct values along every row so the answer is unique in fp16 too
    x = torch.randperm(torch.Size(shape).numel()).reshape(shape).to(dtype) / 64
    check(lambda x: getattr(torch, name)(x, dim, keepdim=keepdim), x)


def test_argmax_ties_pick_first_index():
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -5.0, -5.0, -1.0]])
    check(lambda x: (x.argmax(-1), x.argmin(-1), x.argmax(0), x.argmin(0)), x)


def test_nan_propagates_through_max_and_argmax():
    x = torch.randn(4, 9)
    x[1, 3] = float("nan")
    x[2, 0] = float("nan")
    check(lambda x: (x.amax(-1), x.amin(-1), x.argmax(-1), x.argmin(-1), x.sum(-1)), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize(
    ("shape", "dims", "keepdim"),
    [
        ((7, 13), -1, False),
        ((7, 13), 0, True),
        ((5, 33, 17), (0, 2), False),
        ((5, 33, 17), None, True),
    ],
)
def test_var_std(shape, dims, keepdim, correction, dtype):
    x = torch.randn(shape).to(dtype)

    def fn(x):
        return (
            torch.var(x, dims, correction=correction, keepdim=keepdim),
            torch.std(x, dims, correction=correction, keepdim=keepdim),
            torch.var_mean(x, dims, correction=correction, keepdim=keepdim),
        )

    check(fn, x, dtype=dtype)


@pytest.mark.parametrize("name", ["any", "all"])
@pytest.mark.parametrize("dims", [-1, 0, None])
def test_any_all(name, dims):
    b = torch.rand(7, 13) > 0.8
    b[2] = True  # one row all true
    b[4] = False  # one row all false
    f = (torch.rand(7, 13) > 0.5).float() * torch.randn(7, 13)

    def fn(b, f):
        op = getattr(torch, name)
        if dims is None:
            return op(b), op(f)
        return op(b, dims), op(f, dims, keepdim=True)

    check(fn, b, f)


def test_non_contiguous_inputs():
    x = torch.randn(13, 7).t()  # transposed
    y = torch.randn(5, 34, 17)[:, ::2, 1:]  # strided slice, odd sizes
    check(lambda x, y: (x.sum(-1), x.amax(0), y.mean((0, 2)), y.var(1), x.argmax(-1)), x, y)


def test_broadcast_then_reduce():
    a = torch.randn(7, 1)
    b = torch.randn(13)
    check(lambda a, b: ((a * b).sum(-1), (a + b).amax(0), (a - b).mean()), a, b)


# name -> (input shape, reduction applied to x)
ZERO_SIZE_CASES = {
    "sum-over-empty-dim": ((0, 5), "x.sum(0)"),
    "sum-empty-output": ((0, 5), "x.sum(1)"),
    "sum-over-empty-last": ((4, 0), "x.sum(-1)"),
    "prod-over-empty": ((4, 0), "x.prod(-1)"),
    "any-over-empty": ((4, 0), "x.any(-1)"),
    "all-over-empty": ((4, 0), "x.all(-1)"),
    "mean-over-empty": ((0, 5), "x.mean(0)"),
    "var-over-empty": ((0, 5), "x.var(0)"),
    "sum-all-empty": ((3, 0, 2), "x.sum()"),
    "softmax-empty-rows": ((0, 7), "torch.softmax(x, -1)"),
}

_ZERO_SIZE_SCRIPT = """
import sys, torch
from tests.compile_check import check
for name, (shape, expr) in sorted({cases!r}.items()):
    print("start", name, flush=True)
    try:
        check(eval("lambda x: " + expr), torch.randn(shape))
    except Exception as exc:
        print("fail", name, type(exc).__name__, str(exc).splitlines()[:3], flush=True)
    else:
        print("ok", name, flush=True)
"""


def test_zero_size_reductions():
    """All cases in one child process: a crash in a kernel (e.g. an unmasked load from an
    empty tensor) must fail this test, not kill the whole pytest session."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    script = _ZERO_SIZE_SCRIPT.format(cases=ZERO_SIZE_CASES)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stdout.splitlines()
    bad = [line for line in lines if line.startswith("fail")]
    if proc.returncode != 0:
        started = [line for line in lines if line.startswith("start")]
        bad.append(f"child exited {proc.returncode} during {started[-1] if started else '?'}: "
                   f"{proc.stderr[-2000:]}")  # fmt: skip
    ok = sum(line.startswith("ok") for line in lines)
    assert not bad and ok == len(ZERO_SIZE_CASES), "\n".join(bad)


def test_one_element_and_size_one_dims():
    x = torch.randn(1)
    y = torch.randn(1, 1, 5)
    check(lambda x, y: (x.sum(), x.amax(0), y.sum((0, 1)), y.var(-1), y.mean(1)), x, y)


def test_long_row_looped_path():
    x = torch.randn(3, 9000)
    check(lambda x: (x.sum(-1), x.amax(-1), x.mean(-1), x.var(-1), x.argmax(-1)), x)


def test_long_row_softmax_and_layer_norm():
    x = torch.randn(3, 9000)
    w = torch.randn(9000)
    check(lambda x, w: (torch.softmax(x, -1), F.layer_norm(x, (9000,), w)), x, w)


def test_long_column():
    x = torch.randn(9000, 3)
    check(lambda x: (x.sum(0), x.amin(0), x.mean(0, keepdim=True), x.std(0), x.argmin(0)), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_forward_backward(name, dim, dtype):
    x = (torch.randn(7, 13) * 3).to(dtype).requires_grad_()
    check_grad(lambda x: getattr(torch, name)(x, dim), x, dtype=dtype)


def test_softmax_3d_and_dtype_argument():
    x = torch.randn(5, 33, 17).half()
    check(lambda x: (torch.softmax(x, 1, dtype=torch.float32), F.log_softmax(x.float(), -1)), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_layer_norm_forward_backward(affine, dtype):
    x = torch.randn(5, 7, 13).to(dtype).requires_grad_()
    w = torch.randn(13).to(dtype).requires_grad_()
    b = torch.randn(13).to(dtype).requires_grad_()
    if affine == "weight+bias":
        check_grad(lambda x, w, b: F.layer_norm(x, (13,), w, b), x, w, b, dtype=dtype)
    elif affine == "weight":
        check_grad(lambda x, w: F.layer_norm(x, (13,), w), x, w, dtype=dtype)
    else:
        check_grad(lambda x: F.layer_norm(x, (13,)), x, dtype=dtype)


def test_layer_norm_over_two_dims():
    x = torch.randn(5, 7, 13, requires_grad=True)
    w = torch.randn(7, 13, requires_grad=True)
    b = torch.randn(7, 13, requires_grad=True)
    check_grad(lambda x, w, b: F.layer_norm(x, (7, 13), w, b, eps=1e-3), x, w, b)


@pytest.mark.parametrize("with_affine", [True, False])
def test_native_layer_norm_outputs(with_affine):
    x = torch.randn(7, 13)
    w = torch.randn(13) if with_affine else None
    b = torch.randn(13) if with_affine else None
    # mean and rstd outputs are compared too
    check(lambda x: torch.ops.aten.native_layer_norm(x, [13], w, b, 1e-5), x)


def test_native_layer_norm_backward():
    x = torch.randn(7, 13, requires_grad=True)
    w = torch.randn(13, requires_grad=True)
    b = torch.randn(13, requires_grad=True)
    check_grad(lambda x, w, b: torch.ops.aten.native_layer_norm(x, [13], w, b, 1e-5)[0], x, w, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_functional(with_weight, dtype):
    x = torch.randn(5, 7, 13).to(dtype).requires_grad_()
    w = torch.randn(13).to(dtype).requires_grad_()
    if with_weight:
        check_grad(lambda x, w: F.rms_norm(x, (13,), w, eps=1e-6), x, w, dtype=dtype)
    else:
        check_grad(lambda x: F.rms_norm(x, (13,)), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_manual_fp32_cast_back(dtype):
    x = torch.randn(5, 7, 13).to(dtype).requires_grad_()
    w = torch.randn(13).to(dtype).requires_grad_()

    def rms(x, w):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return h.to(x.dtype) * w

    check_grad(rms, x, w, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cross_entropy_forward_backward(dtype):
    logits = torch.randn(7, 13).to(dtype).requires_grad_()
    target = torch.randint(0, 13, (7,))
    check_grad(lambda x, t: F.cross_entropy(x, t), logits, target, dtype=dtype)


def test_cross_entropy_variants():
    logits = torch.randn(7, 13, requires_grad=True)
    target = torch.randint(0, 13, (7,))
    target[3] = -100  # the default ignore_index
    check_grad(lambda x, t: F.cross_entropy(x, t, reduction="none"), logits, target)
    check_grad(
        lambda x, t: F.cross_entropy(x, t, reduction="sum", label_smoothing=0.1), logits, target
    )
    check_grad(lambda x, t: F.cross_entropy(x, t), logits, target)


def test_softmax_of_fitting_row_is_one_kernel():
    x = torch.randn(7, 257)
    reports = check(lambda x: torch.softmax(x, -1), x)
    assert kernel_count(reports) == 1, [r.format() for r in reports]


def test_layer_norm_forward_is_one_kernel():
    x = torch.randn(7, 13, 33)
    w = torch.randn(33)
    b = torch.randn(33)
    reports = check(lambda x, w, b: F.layer_norm(x, (33,), w, b), x, w, b)
    assert kernel_count(reports) == 1, [r.format() for r in reports]


def test_mean_and_var_of_rows_is_one_kernel():
    x = torch.randn(7, 257)
    reports = check(lambda x: (x.mean(-1), x.var(-1)), x)
    assert kernel_count(reports) == 1, [r.format() for r in reports]


def test_looped_logsumexp_rescales_per_row_with_masked_tails_and_minus_inf():
    """Rows longer than a persistent block (looped, a running max per row): a row of
    -inf, a row whose max comes late, a row of -inf prefix, and the masked tail of the
    last step (9000 is no multiple of a block)."""
    x = torch.randn(5, 9000) * 4
    x[1] = float("-inf")
    x[2, -1] = 80.0  # the max arrives in the last step
    x[3, :5000] = float("-inf")
    t = torch.tensor([0, 0, 8999, 7000, 17])
    check(
        lambda x, t: (
            torch.logsumexp(x, -1),
            torch.log_softmax(x, -1),
            F.cross_entropy(x[[0, 2, 3, 4]], t[[0, 2, 3, 4]]),
        ),
        x,
        t,
    )


@pytest.mark.parametrize("length", [40, 9000], ids=["persistent", "looped"])
def test_logsumexp_rows_with_infinities_and_nan_are_eagers(length):
    """``torch.logsumexp``'s own results for a row holding +inf (+inf), only -inf (-inf),
    +inf and -inf (+inf), NaN (NaN), and a row of large finite values (no overflow)."""
    x = torch.randn(6, length)
    x[0, 3] = float("inf")
    x[1] = float("-inf")
    x[2, 1], x[2, 2] = float("inf"), float("-inf")
    x[3, length // 2] = float("nan")
    x[4] = 1e30
    check(lambda x: (torch.logsumexp(x, -1), torch.logsumexp(x, 1, keepdim=True)), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cross_entropy_saves_the_row_statistic_not_log_softmax(dtype):
    """The forward of a cross-entropy saves the logits (already there) and one value per
    row; the backward recomputes log_softmax. Saving log_softmax wrote, and read back, a
    second tensor the size of the logits (gpt2's 823 MB)."""
    logits = torch.randn(6, 300).to(dtype).requires_grad_()
    target = torch.tensor([0, 299, 5, 17, 42, 150])
    reports = check_grad(lambda x: F.cross_entropy(x.float(), target), logits, dtype=dtype)
    forward = reports[0].wrapper
    # no logits-sized buffer: neither log_softmax nor (bf16) a float32 copy of the logits
    assert "(6, 300)" not in forward, forward


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_softmax_within_one_ulp_of_eager(dtype):
    """A float16/bfloat16 softmax multiplies by one reciprocal per row: the float32
    quotient within an ulp, so the 16-bit result is eager's or one ulp from it."""
    x = (torch.randn(33, 517) * 4).to(dtype)
    expected = torch.softmax(x, -1)
    actual = compiled_reports(lambda x: torch.softmax(x, -1), x)[0]
    info = torch.finfo(dtype)
    one_ulp = info.eps * expected.float().abs() + info.smallest_normal * info.eps
    assert ((actual.float() - expected.float()).abs() <= one_ulp).all()
    assert (actual == expected).float().mean() > 0.99


def test_variance_and_layer_norm_far_from_zero_match_float64():
    """Rows whose mean dwarfs their spread: the rough mean, rounded from a large sum, is
    corrected by the deviations' own sum (a constant row of 1e6 + 0.1 had a std of 0.0625)."""
    x = torch.full((3, 1031), 1e6 + 0.1)
    check(lambda x: (x.std(dim=1), torch.var_mean(x, dim=1)), x)
    torch.manual_seed(0)
    y = 1e4 + 0.01 * torch.randn(4, 1024)
    got = torch.compile(lambda y: y.var(dim=1), backend="tilefuse")(y)
    want = y.double().var(dim=1)
    assert ((got.double() - want).abs() / want).max() < 1e-5
    expected = F.layer_norm(y.double(), (1024,)).float()
    actual = torch.compile(lambda y: F.layer_norm(y, (1024,)), backend="tilefuse")(y)
    assert (actual - expected).abs().max() <= (F.layer_norm(y, (1024,)) - expected).abs().max()
