"""Split reductions against eager, forced on through the Triton interpreter with small
chunks: sum, mean, prod, amax/amin, any/all, var, batch norm (forward and backward), over
dtypes, sizes that do not divide into chunks (primes, one past a split boundary),
several dims, keepdim and non-contiguous inputs; and the kernel count that proves two
stages ran where a split applies, and one where it does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, kernel_count
from tilefuse.frontend.lowerings import split_reduction
from tilefuse.report import collect_reports

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CHUNK = 64  # the smallest chunk a split makes here: a few thousand elements split 2..16 ways


@pytest.fixture(autouse=True)
def forced_small_splits(monkeypatch):
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "1")
    monkeypatch.setattr(split_reduction, "MIN_CHUNK", CHUNK)
    monkeypatch.setattr(split_reduction, "MIN_PROGRAM_ELEMENTS", 0)
    monkeypatch.setattr(split_reduction, "TARGET_PROGRAMS", 16)


# 2*CHUNK+1: one past the smallest split (a padded last chunk); 1031: prime.
SIZES = [2 * CHUNK, 2 * CHUNK + 1, 1031, 4096]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("numel", SIZES)
def test_full_sum_and_mean_run_in_two_stages(numel, dtype):
    x = torch.randn(numel).to(dtype)
    reports = check(lambda x: (x.sum(), x.mean()), x, dtype=dtype)
    # each reduction: stage 1 kernel; both stage 2s and the mean's scale fuse into one
    assert 2 <= kernel_count(reports) <= 3


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["amax", "amin"])
def test_max_min_with_negative_values_and_padding(name, dtype):
    # all negative: a zero padding element would win a max
    x = (-1 - torch.rand(2 * CHUNK + 3)).to(dtype)
    check(lambda x: getattr(x, name)(), x, dtype=dtype)
    x = (1 + torch.rand(1031)).to(dtype)  # all positive: zero would win a min
    check(lambda x: getattr(x, name)(), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prod_pads_with_one(dtype):
    x = (1 + 0.01 * torch.randn(2 * CHUNK + 5)).to(dtype)
    check(lambda x: x.prod(), x, dtype=dtype)


@pytest.mark.parametrize("numel", [2 * CHUNK + 1, 1031])
def test_any_all(numel):
    ones = torch.ones(numel, dtype=torch.bool)
    last = torch.zeros(numel, dtype=torch.bool)
    last[-1] = True  # found only in the last, padded chunk
    for x in (ones, last, ~last):
        check(lambda x: (x.any(), x.all()), x)


def test_integer_and_bool_sums_and_max():
    x = torch.randint(-1000, 1000, (1031,), dtype=torch.int32)
    check(lambda x: (x.sum(), x.amax(), x.amin(), (x > 0).sum()), x)


@pytest.mark.parametrize("at", [0, 700, 1030])
def test_nan_propagates_through_both_stages(at):
    x = torch.randn(1031)
    x[at] = float("nan")
    check(lambda x: (x.amax(), x.amin(), x.sum()), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("shape", "dims", "keepdim"),
    [
        ((3, 5, 11, 7), (0, 2, 3), False),  # per channel, as batch norm: 385 each
        ((3, 5, 11, 7), (0, 2, 3), True),
        ((2, 389), 1, True),  # a prime row
        ((389, 2), 0, False),  # reduce the outer dim
    ],
    ids=["per-channel", "per-channel-keep", "rows-keep", "outer"],
)
def test_dims_and_keepdim(shape, dims, keepdim, dtype):
    x = torch.randn(shape).to(dtype)
    reports = check(lambda x: x.sum(dims, keepdim=keepdim), x, dtype=dtype)
    assert kernel_count(reports) == 2


def test_non_contiguous_input():
    x = torch.randn(37, 5, 11).permute(2, 1, 0)  # [11, 5, 37], strides (1, 11, 55)
    assert not x.is_contiguous()
    reports = check(lambda x: (x.sum((0, 2)), x.amax((0, 2))), x)
    assert kernel_count(reports) >= 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_var_mean_splits_reading_the_input_once(dtype):
    """Stage 1 gives each piece its sum, mean and squared deviations (one kernel, one read
    of x); stage 2 combines them (Chan et al.). 293 is prime: the last piece is short."""
    x = (3 + torch.randn(4, 293)).to(dtype)
    reports = check(lambda x: torch.var_mean(x, dim=1, correction=1), x, dtype=dtype)
    assert kernel_count(reports) == 2
    check(lambda x: x.std(), x, dtype=dtype)


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6], ids=["centred", "offset", "far"])
@pytest.mark.parametrize("numel", [2 * CHUNK + 1, 1031])
def test_split_variance_is_as_exact_as_eager(numel, offset):
    """Pieces of different means (a ramp), far from zero: the pieces' centres and the
    overall mean are rounded from large sums, and the corrections cancel both, so the
    variance stays within 1e-5 of float64's; a NaN or inf still poisons its row."""
    x = offset + torch.randn(3, numel) + torch.linspace(-5, 5, numel)
    check(lambda x: torch.var_mean(x, dim=1, correction=0), x)
    want = x.double().var(dim=1)
    got = torch.compile(lambda x: x.var(dim=1), backend="tilefuse")(x)
    assert ((got.double() - want).abs() / want).max() < 1e-5
    x[0, 7], x[1, -1] = float("nan"), float("inf")
    check(lambda x: torch.var_mean(x, dim=1), x)


def test_split_variance_of_a_constant_is_zero_and_of_one_ulp_steps_is_exact():
    """Constant rows give 0 (the mean's correction cancels its rounding exactly; the clamp
    at 0 is a guard no input here reaches); rows stepping by one float32 ulp of 1e4..3e6
    (a spread that is all rounding) match float64's variance."""
    x = torch.full((2, 1031), 123456.7)
    var, mean = torch.compile(lambda x: torch.var_mean(x, dim=1), backend="tilefuse")(x)
    assert var.tolist() == [0.0, 0.0] and torch.equal(mean, x[:, 0])
    for value in (1e4 + 0.7, 3e6):
        steps = torch.randint(0, 2, (4, 1031)).float() * torch.finfo(torch.float32).eps
        x = value + steps * value
        got = torch.compile(lambda x: x.std(dim=1, correction=0), backend="tilefuse")(x)
        want = x.double().std(dim=1, correction=0)
        assert ((got.double() - want).abs() / want).max() < 1e-5


@pytest.mark.parametrize("dims", [(0,), (0, 2)], ids=["column", "two-dims"])
def test_split_variance_over_columns_and_several_dims(dims):
    """A variance over the leading dim reads columns (stage 1 laid out by piece first);
    over two dims without keepdim the outputs are squeezed."""
    x = 3 + torch.randn(1031, 6, 2)
    check(lambda x: torch.var_mean(x, dim=dims, correction=1), x)
    check(lambda x: torch.var_mean(x, dim=dims, keepdim=True), x)


def test_batch_norm_training_forward_and_backward(monkeypatch):
    x = torch.randn(4, 3, 9, 7, requires_grad=True)  # 252 elements per channel
    w = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)

    def bn(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True)

    def kernels_per_graph(split: str) -> list[int]:
        monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", split)
        with collect_reports() as reports:  # the forward's and the backward's
            check_grad(bn, x, w, b)
        return [len(r.kernels) for r in reports]

    whole = kernels_per_graph("0")
    split = kernels_per_graph("1")
    assert len(split) == len(whole) == 2
    # forward: the mean and the squared deviations in two stages each; backward: the
    # per-channel sums of the gradient and of gradient * (x - mean) likewise
    assert all(s > w for s, w in zip(split, whole)), (split, whole)


def test_off_and_argmax_stay_one_reduction(monkeypatch):
    x = torch.randn(1031)
    assert kernel_count(check(lambda x: x.sum(), x)) == 2
    assert kernel_count(check(lambda x: x.argmax(), x)) == 1
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "0")
    assert kernel_count(check(lambda x: x.sum(), x)) == 1


def test_auto_does_not_split_for_the_interpreter(monkeypatch):
    # the interpreter runs one program at a time: Triton does not declare the capability
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "auto")
    assert kernel_count(check(lambda x: x.sum(), torch.randn(1031))) == 1


def test_option_turns_splitting_on_for_one_compile(monkeypatch):
    import tilefuse

    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "auto")
    x = torch.randn(1031)
    torch._dynamo.reset()
    tilefuse.reset()
    fn = torch.compile(lambda x: x.sum(), backend="tilefuse", options={"split_reductions": True})
    with collect_reports() as reports:
        torch.testing.assert_close(fn(x), x.sum())
    assert kernel_count(reports) == 2


def test_short_or_wide_reductions_are_not_split():
    x = torch.randn(2 * CHUNK - 1)  # cannot make two chunks of CHUNK
    assert kernel_count(check(lambda x: x.sum(), x)) == 1
    x = torch.randn(17, 300)  # 17 outputs * 2 chunks > TARGET_PROGRAMS
    assert kernel_count(check(lambda x: x.sum(1), x)) == 1


def test_symbolic_sizes_are_not_split():
    import tilefuse
    from tilefuse.report import collect_reports

    torch._dynamo.reset()
    tilefuse.reset()
    fn = torch.compile(lambda x: x.sum(), backend="tilefuse", dynamic=True)
    with collect_reports() as reports:
        for n in (1031, 2000):
            x = torch.randn(n)
            torch.testing.assert_close(fn(x), x.sum())
    assert tilefuse.stats()["graphs_compiled_symbolic"] >= 1
    assert all(len(r.kernels) == 1 for r in reports)


# Column reductions: the input contiguous along the kept dim, strided along the reduced
# one. Judged by their tiles of split_reduction.COLUMN_TILE outputs; stage 1 laid out
# (chunks, *kept) so that its reads stay contiguous along the kept dim.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "cols"), [(2 * CHUNK + 1, 40), (1031, 7), (4096, 96)])
def test_column_sums_run_in_two_stages(rows, cols, dtype):
    x = torch.randn(rows, cols).to(dtype)
    reports = check(lambda x: (x.sum(0), x.amax(0, keepdim=True)), x, dtype=dtype)
    assert kernel_count(reports) >= 2, [r.format() for r in reports]
    # Stage 1 is laid out (chunks, cols): output (piece, col) reads column xindex % cols
    # from row piece * chunk on, piece = xindex // cols.
    plan = split_reduction.split_plan(cols, rows, columns=True)
    assert plan is not None and plan.columns
    loads = [line for r in reports for k in r.kernels for line in k.source.splitlines()
             if "tl.load" in line]  # fmt: skip
    wanted = (f"(xindex % {cols})", f"{plan.chunk}*(xindex // {cols})")
    assert any(all(w in line for w in wanted) for line in loads), (wanted, loads)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.view(-1, 24).sum(0),  # a bias gradient of a [batch, tokens, C] grad
        lambda x: x.sum((0, 1)),  # a LayerNorm bias gradient
        lambda x: x.reshape(1048, 24).amax(0, keepdim=True),
    ],
    ids=["view-sum", "two-dims", "reshape-amax"],
)
def test_column_reductions_through_a_reshape_run_in_two_stages(fn):
    # The reshape's // and % are simplified over the sizes before the strides are read.
    reports = check(fn, torch.randn(8, 131, 24))
    assert kernel_count(reports) == 2, [r.format() for r in reports]


def test_column_reductions_over_several_dims_and_of_computed_values():
    x = torch.randn(9, 131, 24)
    check(lambda x: ((x * 2 + 1).sum((0, 1)), (x > 0).any(1), x.amin((0, 1), keepdim=True)), x)


def test_a_transposed_input_is_a_row_reduction_and_still_right():
    x = torch.randn(40, 1031).t()  # sum over dim 0 of this reads rows of the storage
    check(lambda x: x.sum(0), x)


def test_bias_and_layer_norm_gradients_split_by_columns():
    lin = torch.nn.Linear(24, 40)
    norm = torch.nn.LayerNorm(40)

    def fn(x):
        return norm(lin(x)).relu()

    x = torch.randn(8, 131, 24, requires_grad=True)
    params = list(lin.parameters()) + list(norm.parameters())
    eager_grads = torch.autograd.grad(fn(x).square().sum(), [x, *params])
    with collect_reports() as reports:
        compiled = torch.compile(fn, backend="tilefuse")
        grads = torch.autograd.grad(compiled(x).square().sum(), [x, *params])
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    backward = reports[-1]
    assert any("(xindex // 40)" in k.source for k in backward.kernels), backward.format()


def test_tiny_second_stages_share_a_kernel(monkeypatch):
    """A LayerNorm's weight and bias gradients are two split column sums: their first
    stages share the gradient's read, and their second stages (24 outputs of a few
    partial sums each: tiny) share one launch instead of one each."""
    from tilefuse.scheduler import fusion

    def fn(x, w, b):
        return F.layer_norm(x, (24,), w, b)

    def kernels_of_both_graphs():
        inputs = [torch.randn(600, 24), torch.randn(24), torch.randn(24)]
        with collect_reports() as reports:
            check_grad(fn, *[t.requires_grad_() for t in inputs])
        return kernel_count(reports)

    together = kernels_of_both_graphs()
    monkeypatch.setattr(fusion, "TINY_REDUCTION", 0)
    apart = kernels_of_both_graphs()
    assert together == apart - 1, (together, apart)
