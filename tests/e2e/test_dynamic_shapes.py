"""One compiled function or module called with several shapes in a row: Dynamo turns on
dynamic shapes after the second distinct shape (or at once with ``dynamic=True``); every
call must still match eager, including a return to an earlier shape and size-1 dims."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.compile_check import assert_same
from tests.e2e.test_models import Block

DIM = 16
# (batch, seq): distinct sizes, a size-1 dim (Dynamo specializes 0/1), back to an old shape
SHAPES = [(2, 8), (3, 5), (4, 7), (1, 9), (5, 1), (2, 8), (6, 11)]


def _fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    h = F.layer_norm(x, (x.shape[-1],), w, b)
    scores = torch.softmax(h @ h.transpose(-1, -2) / 4.0, dim=-1)
    return (
        F.gelu(h * 2 + 1),
        scores.sum(1),
        x.amax(1),
        x.mean((0, 1)),
        x.reshape(-1, x.shape[-1]).var(0),
        torch.cat([x, x[:, :1]], 1).flip(1) + torch.arange(x.shape[1] + 1)[:, None],
    )


@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic", "dynamic=True"])
def test_function_over_changing_batch_and_seq(dynamic):
    compiled = torch.compile(_fn, backend="tilefuse", dynamic=dynamic)
    w, b = torch.randn(DIM), torch.randn(DIM)
    for batch, seq in SHAPES:
        x = torch.randn(batch, seq, DIM)
        _same(compiled(x, w, b), _fn(x, w, b), f"output at shape {(batch, seq)}")


def test_changing_dtype_and_non_contiguous_inputs():
    def fn(x):
        return torch.softmax(x * 2, -1), x.sum(0)

    compiled = torch.compile(fn, backend="tilefuse")
    for n, dtype, transposed in [
        (5, torch.float32, False),
        (7, torch.float32, False),
        (9, torch.float32, True),
        (11, torch.float16, False),
        (3, torch.float32, True),
    ]:
        x = torch.randn(13, n).t() if transposed else torch.randn(n, 13)
        x = x.to(dtype)
        _same(compiled(x), fn(x), f"output at n={n}, {dtype}, transposed={transposed}", dtype)


def test_explicitly_marked_dynamic_dim():
    def fn(x):
        return (x.exp() / x.exp().sum(-1, keepdim=True)) * torch.arange(x.shape[-1])

    compiled = torch.compile(fn, backend="tilefuse")
    for n in [4, 9, 17, 1, 33]:
        x = torch.randn(3, n)
        torch._dynamo.mark_dynamic(x, 1)
        _same(compiled(x), fn(x), f"output at n={n}")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, 2 * DIM)
        self.fc2 = nn.Linear(2 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(F.gelu(self.fc1(self.ln(x))))
        return x + torch.softmax(h, dim=-1) * h.mean(1, keepdim=True)


def _same(actual, expected, what: str, dtype=None) -> None:
    try:
        assert_same(actual, expected, dtype)
    except AssertionError as exc:
        raise AssertionError(f"{what} differs from eager: {exc}") from exc


def _module_forward_backward(model: nn.Module, dynamic: bool | None) -> None:
    eager = model
    comp = copy.deepcopy(model)
    compiled = torch.compile(comp, backend="tilefuse", dynamic=dynamic)
    for batch, seq in SHAPES:
        x = torch.randn(batch, seq, DIM)
        xe = x.clone().requires_grad_()
        xc = x.clone().requires_grad_()
        expected = eager(xe)
        actual = compiled(xc)
        _same(actual, expected, f"output at shape {(batch, seq)}")
        seed = torch.randn_like(expected)
        eager.zero_grad()
        comp.zero_grad()
        (expected * seed).sum().backward()
        (actual * seed).sum().backward()
        _same(xc.grad, xe.grad, f"input gradient at shape {(batch, seq)}")
        for (name, pc), (_, pe) in zip(comp.named_parameters(), eager.named_parameters()):
            assert pc.grad is not None, f"no gradient for {name} at shape {(batch, seq)}"
            _same(pc.grad, pe.grad, f"{name}.grad at shape {(batch, seq)}")


@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic", "dynamic=True"])
def test_module_forward_backward_over_changing_shapes(dynamic):
    _module_forward_backward(Net(), dynamic)


def test_transformer_block_over_changing_shapes():
    _module_forward_backward(Block(causal=True), None)


def test_inference_mode_module_over_changing_shapes():
    model = Net().eval()
    compiled = torch.compile(model, backend="tilefuse")
    with torch.no_grad():
        for batch, seq in SHAPES:
            x = torch.randn(batch, seq, DIM)
            _same(compiled(x), model(x), f"output at shape {(batch, seq)}")
