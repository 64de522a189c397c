"""The forward/backward split of training graphs (``frontend/partition.py``) and the
``log_softmax`` decomposition it relies on, against eager: graphs that write into their
inputs, random draws that must stay distinct, and log_softmax's special values, precision
and layout."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import assert_compiled, check, check_grad, compiled_reports


def test_an_input_written_after_a_read_still_gives_eagers_gradients():
    # Recomputing ``b + 1`` in the backward would read ``b`` after the write.
    def f(x, b):
        y = x * (b + 1)
        b.mul_(2)
        return y

    x = torch.randn(16, requires_grad=True)
    b_eager = torch.randn(16)
    b_compiled = b_eager.clone()
    x_compiled = x.detach().clone().requires_grad_()
    f(x, b_eager).sum().backward()
    out, _ = compiled_reports(f, x_compiled, b_compiled)
    out.sum().backward()
    torch.testing.assert_close(x_compiled.grad, x.grad)
    torch.testing.assert_close(b_compiled, b_eager)


class RunningScale(torch.nn.Module):
    """Scales by a buffer, then updates the buffer (an EMA-style running statistic)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x * (self.scale + 1))
        with torch.no_grad():
            self.scale.mul_(0.9).add_(x.detach().mean(0), alpha=0.1)
        return y


def test_a_module_updating_its_buffer_after_use_trains_like_eager():
    torch.manual_seed(0)
    eager, compiled = RunningScale(), RunningScale()
    x = torch.randn(4, 8)
    for _ in range(2):
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        eager(xe).sum().backward()
        torch.compile(compiled, backend="tilefuse")(xc).sum().backward()
        torch.testing.assert_close(xc.grad, xe.grad)
        torch.testing.assert_close(compiled.scale, eager.scale)


WRITES = {
    "view-T": lambda b: b.view(4, 4).T.mul_(2),
    "data": lambda b: b.data.mul_(2),
    "same-dtype-float": lambda b: b.float().mul_(2),
    "foreach": lambda b: torch._foreach_mul_([b], 2.0),
    "dunder": lambda b: b.__imul__(2),
    "positional-inplace": lambda b: F.leaky_relu(b, 0.01, True),
    "out": lambda b: torch.add(b, 1, out=b),
    "setitem": lambda b: b.__setitem__(slice(0, 4), 0.5),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_form_of_writing_into_an_input_keeps_eagers_gradients(name):
    # Each is a write into ``b`` after ``b + 1`` was read: a min-cut backward recomputing
    # ``b + 1`` would read the new ``b`` (autograd raises on its version counter).
    write = WRITES[name]

    def f(x, b):
        y = x * (b + 1)
        write(b)
        return y

    x = torch.randn(16, requires_grad=True)
    b_eager = torch.randn(16) - 0.5
    b_compiled = b_eager.clone()
    x_compiled = x.detach().clone().requires_grad_()
    f(x, b_eager).sum().backward()
    torch._dynamo.reset()
    torch.compile(f, backend="tilefuse")(x_compiled, b_compiled).sum().backward()
    torch.testing.assert_close(x_compiled.grad, x.grad)
    torch.testing.assert_close(b_compiled, b_eager)


def test_batch_norm_reading_its_running_stats_before_the_update_trains_like_eager():
    mean, var = torch.randn(8), torch.rand(8) + 0.5

    def f(x, mean, var):
        y = x * (mean + 1)  # read before batch norm updates the running mean
        return F.batch_norm(y, mean, var, training=True).sum(0)

    x = torch.randn(4, 8, requires_grad=True)
    xc, mc, vc = x.detach().clone().requires_grad_(), mean.clone(), var.clone()
    f(x, mean, var).sum().backward()
    torch._dynamo.reset()
    torch.compile(f, backend="tilefuse")(xc, mc, vc).sum().backward()
    torch.testing.assert_close(xc.grad, x.grad)
    torch.testing.assert_close(mc, mean)


def test_log_softmax_of_a_data_dependent_empty_row_is_eagers(monkeypatch):
    # The row length is unbacked (maybe 0): the decomposition declines, the op stays whole.
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)

    def f(x):
        return F.log_softmax(x[x > 0].view(-1, 1) * x.sum(), 0)

    # (tilefuse itself runs graphs with unbacked sizes eagerly, with its one warning)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        for x in (-torch.rand(8), torch.rand(8)):
            torch._dynamo.reset()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = torch.compile(f, backend="tilefuse")(x)
            torch.testing.assert_close(out, f(x))


def test_two_random_draws_in_a_training_graph_stay_two():
    # The partitioner's common-subexpression pass once merged them: the result was zero.
    x = torch.ones(1000, requires_grad=True)
    out, _ = compiled_reports(lambda x: x * torch.randn_like(x) - x * torch.randn_like(x), x)
    assert out.abs().sum() > 0
    out.sum().backward()
    assert_compiled(graphs=2)


def test_log_softmax_special_values_are_eagers():
    x = torch.randn(5, 7)
    x[0, 2] = float("inf")  # eager: the whole row NaN
    x[1] = float("-inf")  # eager: NaN
    x[2, 3] = float("nan")
    x[3, 4] = float("-inf")  # eager: -inf at that place only
    x = x.requires_grad_()
    check_grad(lambda x: F.log_softmax(x, -1), x)


def test_long_row_softmax_of_a_row_holding_inf_is_nan_as_eager():
    x = torch.randn(2, 5000)
    x[0, 7] = float("inf")
    check(lambda x: F.softmax(x, -1), x)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e5])
def test_log_softmax_of_large_logits_is_as_precise_as_eager(offset):
    # x - (max + log(sum)) rounds log(sum) away next to a large max; eager subtracts twice.
    error, eager_error = _errors_against_float64(
        lambda x: F.log_softmax(x, -1), torch.randn(8, 1000) * 3 + offset
    )
    assert error <= 4 * eager_error + 1e-6, (error, eager_error)


def test_log_softmax_result_is_contiguous_as_eagers():
    x = torch.randn(6, 5)
    check(lambda x: F.log_softmax(x.t(), -1).view(-1), x)
    out, _ = compiled_reports(lambda x: F.log_softmax(x.t(), -1), x)
    assert out.stride() == (6, 1)
    images = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    out, _ = compiled_reports(lambda x: F.log_softmax(x, 1), images)
    assert out.is_contiguous()
    torch.testing.assert_close(out, F.log_softmax(images, 1))


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_long_row_float32_softmax_of_large_logits_is_as_precise_as_eager(offset):
    error, eager_error = _errors_against_float64(
        lambda x: F.softmax(x, -1), torch.randn(4, 5000) * 3 + offset
    )
    assert error <= 16 * eager_error + 1e-9, (error, eager_error)


def _errors_against_float64(fn, x):
    """(compiled, eager) largest absolute error of ``fn(x)`` against ``fn`` in float64."""
    reference = fn(x.double())
    actual, _ = compiled_reports(fn, x)
    return (actual.double() - reference).abs().max(), (fn(x).double() - reference).abs().max()


def _attention_with_identity_dropout(q, k, v):
    # GPT-2's eager attention in training with attention dropout 0: a clone of the
    # probabilities feeds the second product, whose backward reads it transposed.
    p = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1)
    return F.dropout(p, 0.0, training=True) @ v


def test_a_saved_clone_is_a_view_of_its_source_not_a_second_copy():
    """The forward saves the clone's transpose for the backward: a view of the softmax's
    buffer (eager's strides), not a copy kernel writing the probabilities again, and the
    product reads the same buffer instead of a clone of it."""
    q, k, v = (torch.randn(2, 3, 32, 8, requires_grad=True) for _ in range(3))
    reports = check_grad(_attention_with_identity_dropout, q, k, v)
    generated = [kr for kr in reports[0].kernels if not kr.kind.startswith("template")]
    assert [kr.kind for kr in generated] == ["reduction"], [kr.name for kr in generated]
    assert generated[0].stores == [generated[0].nodes[-1]]  # the probabilities, once


def test_a_clone_the_caller_can_see_stays_a_copy():
    """Sharing memory is only for tensors the caller never holds: an output's clone,
    saved for the backward, stays a copy, so writing into that output after the forward
    leaves the gradient as eager computes it; two outputs that are a value and its
    clone do not alias."""

    def f(x, w):
        p = torch.softmax(x, -1)
        return p, p.clone() @ w

    def g(x, w):
        return x, x.clone() @ w

    def run(fn):
        x, w = torch.randn(6, 16), torch.randn(16, 5, requires_grad=True)
        held, out = fn(x, w)
        held.mul_(0)  # the caller overwrites a tensor it holds: an output, an input
        out.sum().backward()
        return out.detach(), w.grad

    for fn in (f, g):
        torch.manual_seed(1)
        want = run(fn)
        torch.manual_seed(1)
        got = run(torch.compile(fn, backend="tilefuse"))
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e)

    both = torch.compile(lambda x: (torch.softmax(x, -1), torch.softmax(x, -1).clone().t()),
                         backend="tilefuse")  # fmt: skip
    a, b = both(torch.randn(4, 6))
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()


@pytest.mark.parametrize("backend", ["triton", "acme"])
def test_log_softmax_row_statistics_share_one_read_of_a_long_row(monkeypatch, backend):
    """``sum(exp(x - amax))`` is lowered as one ``softmax_sum`` reduction, which the
    Triton backend computes online in the loop of the row's max: one read of a row too
    long for registers (a cross-entropy's logits), with eager's special values."""
    monkeypatch.setenv("TILEFUSE_BACKENDS", backend)
    x = torch.randn(6, 9000) * 3  # past the 8192 a float32 row keeps in registers
    x[0, 2] = float("inf")
    x[1] = float("-inf")
    x[2, 3] = float("nan")
    x[3, 4] = float("-inf")
    x[4] += 1e4
    reports = check_grad(lambda x: F.log_softmax(x, -1), x.requires_grad_())
    (statistics,) = [k for k in reports[0].kernels if k.kind == "reduction"]
    assert statistics.backend == backend
    if backend == "triton":  # one loop for both statistics, one writing the result
        assert statistics.source.count("for roffset") == 2, statistics.source


def test_an_op_returning_a_view_of_a_clone_does_not_see_the_clones_source():
    """``diagonal`` and ``view(dtype)`` run as eager calls return views of their input:
    given a clone, they must get the clone, not the buffer it copies, which the caller
    also holds."""

    def f(x, w):
        y = x @ w
        return y, y.clone().diagonal(), y.clone().view(torch.int32)

    x, w = torch.randn(8, 16), torch.randn(16, 8)
    y, d, v = torch.compile(f, backend="tilefuse")(x, w)
    want_y, want_d, want_v = f(x, w)
    y.zero_()
    torch.testing.assert_close(d, want_d)
    assert torch.equal(v, want_v)


def test_softmax_sum_is_kept_where_rows_are_many_and_dropped_where_a_split_pays(monkeypatch):
    """With splitting on (the GPU's setting), log_softmax over many rows still takes
    the one-pass ``softmax_sum`` (its rows are no column reduction); over a few long
    rows, where a split sum fills the GPU, the denominator is an ordinary split sum."""
    from tilefuse.frontend.lowerings import split_reduction

    monkeypatch.setenv("TILEFUSE_BACKENDS", "triton")
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "1")
    monkeypatch.setattr(split_reduction, "MIN_CHUNK", 64)
    monkeypatch.setattr(split_reduction, "TARGET_PROGRAMS", 16)
    monkeypatch.setattr(split_reduction, "MIN_PROGRAM_ELEMENTS", 0)

    def sources(x):
        return [k.source for r in check(lambda x: F.log_softmax(x, -1), x) for k in r.kernels]

    many_rows = sources(torch.randn(40, 300))  # softmax_sum's NaN where the max is inf:
    assert any('!= float("inf"), ' in s for s in many_rows), many_rows
    few_rows = sources(torch.randn(1, 3000))
    assert not any('!= float("inf"), ' in s for s in few_rows), few_rows
    assert len(few_rows) > 1  # the denominator's two stages
