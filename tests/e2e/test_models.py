"""Small models forward and backward against eager: outputs, input gradients and every
parameter's ``.grad`` (and buffers, where the model updates them)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.compile_check import assert_same, check_grad

BATCH, SEQ, DIM = 2, 8, 16


def check_module(model: nn.Module, *inputs: torch.Tensor, dtype=None) -> None:
    """Compare compiled ``model`` against an identical eager copy: outputs, gradients of
    inputs that require them, every parameter's gradient, and every buffer afterwards."""
    eager = model
    comp = copy.deepcopy(model)
    check_grad(eager, *inputs, dtype=dtype, compiled_fn=comp)
    params = list(zip(comp.named_parameters(), eager.named_parameters()))
    assert params, "model has no parameters"
    for (name, pc), (_, pe) in params:
        if pe.grad is None:
            assert pc.grad is None, name
            continue
        assert pc.grad is not None, f"compiled model produced no gradient for {name}"
        try:
            assert_same(pc.grad, pe.grad, dtype)
        except AssertionError as exc:
            raise AssertionError(f"gradient of parameter {name!r} differs") from exc
    for (name, bc), (_, be) in zip(comp.named_buffers(), eager.named_buffers()):
        try:
            assert_same(bc, be, dtype)
        except AssertionError as exc:
            raise AssertionError(f"buffer {name!r} differs") from exc


class MLP(nn.Module):
    def __init__(self, dim: int = DIM, hidden: int = 2 * DIM) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with attention written in plain ops."""

    def __init__(self, dim: int = DIM, heads: int = 2, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.ln1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads
        h = self.ln1(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
        if self.causal:
            mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(out)
        return x + self.mlp(self.ln2(x))


class ConvBlock(nn.Module):
    def __init__(self, pool: str = "max") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


def _randomise_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 0.1)
        bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
        bn.weight.copy_(torch.randn_like(bn.weight))
        bn.bias.copy_(torch.randn_like(bn.bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mlp_forward_backward(dtype):
    model = MLP().to(dtype)
    x = torch.randn(BATCH, SEQ, DIM).to(dtype).requires_grad_()
    check_module(model, x, dtype=dtype)


def test_mlp_training_steps_match():
    """Three SGD steps: the compiled graph is reused and must track eager exactly."""
    eager = MLP()
    comp = copy.deepcopy(eager)
    compiled = torch.compile(comp, backend="tilefuse")
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(comp.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(BATCH, SEQ, DIM)
        target = torch.randn(BATCH, SEQ, DIM)
        for model, opt in ((eager, opt_e), (compiled, opt_c)):
            opt.zero_grad()
            F.mse_loss(model(x), target).backward()
            opt.step()
    for pc, pe in zip(comp.parameters(), eager.parameters()):
        assert_same(pc, pe)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_transformer_block_forward_backward(causal):
    model = Block(causal=causal)
    x = torch.randn(BATCH, SEQ, DIM, requires_grad=True)
    check_module(model, x)


def test_transformer_block_bfloat16():
    model = Block().to(torch.bfloat16)
    x = torch.randn(BATCH, SEQ, DIM).to(torch.bfloat16).requires_grad_()
    check_module(model, x, dtype=torch.bfloat16)


def test_transformer_block_with_embedding_and_loss():
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(11, DIM)
            self.block = Block(causal=True)
            self.head = nn.Linear(DIM, 11)

        def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            logits = self.head(self.block(self.emb(ids)))
            return F.cross_entropy(logits.view(-1, 11), targets.view(-1))

    ids = torch.randint(0, 11, (BATCH, SEQ))
    targets = torch.randint(0, 11, (BATCH, SEQ))
    check_module(LM(), ids, targets)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_conv_block_eval_forward_backward(pool):
    model = ConvBlock(pool)
    _randomise_bn(model.bn)
    model.eval()
    x = torch.randn(2, 3, 9, 10, requires_grad=True)  # odd height: pooling floors
    check_module(model, x)


def test_conv_block_train_mode_updates_running_stats():
    model = ConvBlock("max")
    model.train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    check_module(model, x)  # also compares running_mean/var/num_batches_tracked


def test_conv_block_channels_last_input():
    model = ConvBlock("avg")
    _randomise_bn(model.bn)
    model.eval()
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    check_module(model, x)
