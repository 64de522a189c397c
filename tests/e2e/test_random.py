"""Random numbers drawn inside kernels (``plugin.CAP_RANDOM``; ``frontend/lowerings/random``):
dropout's mask fuses into its consumers and its backward uses the same mask; the values
are uniform in [0, 1), repeat under ``torch.manual_seed`` and differ between calls; a
backend without the capability, and float64, keep the eager op."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import assert_compiled, compiled_reports
from tilefuse.frontend.lowering import GraphLowering
from tilefuse.report import collect_reports


def _compiled(fn):
    torch._dynamo.reset()
    tilefuse.reset()
    return torch.compile(fn, backend="tilefuse")


def test_dropout_is_one_kernel_and_its_backward_uses_the_same_mask():
    p = 0.25
    x = (torch.rand(48, 80) + 0.5).requires_grad_()  # no zeros: a zero output is a drop
    seed = torch.randn(48, 80)
    with collect_reports() as reports:
        out = _compiled(lambda x: F.dropout(x * 2, p, training=True))(x)
        (out * seed).sum().backward()
    assert_compiled(graphs=2)
    forward = reports[0]
    assert len(forward.kernels) == 1, forward.format()
    assert set(forward.externs) == {"randint.low"}, forward.format()
    kept = out != 0
    torch.testing.assert_close(out, torch.where(kept, x * 2 / (1 - p), 0.0))
    torch.testing.assert_close(x.grad, torch.where(kept, seed * 2 / (1 - p), 0.0))


def test_the_share_dropped_is_p_and_seeds_repeat():
    fn = _compiled(lambda x: F.dropout(x, 0.3, training=True))
    x = torch.ones(256, 256)
    torch.manual_seed(7)
    first = fn(x)
    torch.manual_seed(7)
    again = fn(x)
    later = fn(x)
    assert abs((first == 0).float().mean().item() - 0.3) < 0.01
    assert torch.equal(first, again)
    assert not torch.equal(first, later)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_rand_and_rand_like_are_uniform_and_independent(dtype):
    def fn(x):
        return torch.rand_like(x), torch.rand(300, 100, dtype=dtype), torch.rand_like(x) + x

    x = torch.zeros(300, 100, dtype=dtype)
    out, reports = compiled_reports(fn, x)
    assert not any("rand" in name and "randint" not in name for r in reports
                   for name in r.externs), [r.format() for r in reports]  # fmt: skip
    for r in out:
        assert r.dtype == dtype and r.shape == (300, 100)
        assert 0 <= r.min().item() and r.max().item() < 1
        assert abs(r.float().mean().item() - 0.5) < 0.01
    assert not torch.equal(out[0], out[1].view_as(out[0])) and not torch.equal(out[0], out[2])


def test_a_tensor_read_by_two_kernels_has_the_same_values_in_both():
    def fn(x):
        r = torch.rand_like(x)
        return r.sum(0), r * 1.0

    (sums, values), reports = compiled_reports(fn, torch.zeros(64, 33))
    assert sum(len(r.kernels) for r in reports) == 2, [r.format() for r in reports]
    torch.testing.assert_close(sums, values.sum(0))


@pytest.mark.parametrize(
    "fn, x",
    [
        (lambda x: F.dropout(x, 0.5, training=True), torch.ones(1)),
        (lambda x: torch.rand(()) + x, torch.zeros(())),
        (lambda x: torch.rand_like(x) * 2, torch.zeros(1, 1)),
    ],
    ids=["dropout-of-one", "0-d", "1x1"],
)
def test_a_random_tensor_of_one_element(fn, x):
    out, _ = compiled_reports(fn, x)  # its flat index is the constant 0
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 2


def test_float64_and_backends_without_the_capability_keep_eager_random_ops(monkeypatch):
    x = torch.zeros(40, 30, dtype=torch.float64)
    out, reports = compiled_reports(lambda x: torch.rand_like(x) + x, x)
    assert "rand_like.default" in reports[0].externs and 0 <= out.min() and out.max() < 1
    monkeypatch.setattr(GraphLowering, "generates_random", lambda self, device: False)
    out, reports = compiled_reports(lambda x: F.dropout(x, 0.5, training=True), x.float() + 1)
    assert "rand_like.default" in reports[0].externs
    assert abs((out == 0).float().mean().item() - 0.5) < 0.05


@pytest.mark.gpu
def test_dropout_on_the_gpu_keeps_p_repeats_under_a_seed_and_matches_its_gradient():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    p = 0.2
    fn = _compiled(lambda x: F.dropout(x * 2, p, training=True))
    x = (torch.rand(512, 384, device="cuda") + 0.5).requires_grad_()
    torch.manual_seed(3)
    out = fn(x)
    out.sum().backward()
    torch.manual_seed(3)
    assert torch.equal(fn(x.detach()), out.detach())
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.01
    torch.testing.assert_close(x.grad, torch.where(kept, 2 / (1 - p), 0.0))
    assert tilefuse.stats()["graphs_fallen_back"] == 0
