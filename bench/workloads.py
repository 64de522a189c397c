"""The workloads: what each computes, on which inputs, and the bytes and flops it must at least
move and do.

Bytes are the minimum any implementation must move: every input read once and every output
written once. Flops count matrix-multiply work only (2 * M * N * K per matmul, 3x the forward for
a training step): the floor's rate is the tensor-core GEMM rate, against which pointwise
arithmetic is negligible and would only blur the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import targets
from bench.targets import Target

MEMORY = "memory"
GEMM = "gemm"
TRAINING = "training"

BF16 = torch.bfloat16
FP32 = torch.float32


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


@dataclass
class Case:
    """One workload instantiated on a device: the callable to compile and its inputs.

    ``fn`` (a function or ``nn.Module``) is what every backend compiles. For a training case,
    ``grad_leaves`` are the tensors whose ``.grad`` one step produces and ``grad_out`` is fed
    to ``backward``; their grads are outputs, compared with eager's like the forward result.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    bytes_moved: int
    flops: int
    dtype: torch.dtype
    shape: str
    grad_leaves: Sequence[torch.Tensor] = field(default_factory=tuple)
    grad_out: torch.Tensor | None = None

    def step(self, fn: Callable[..., Any]) -> Callable[[], list[torch.Tensor]]:
        """A zero-argument call of ``fn`` (compiled or not) returning the outputs to compare."""
        args = self.args
        if self.grad_out is None:
            return lambda: _flat(fn(*args))
        leaves, grad_out = self.grad_leaves, self.grad_out

        def train_step() -> list[torch.Tensor]:
            out = fn(*args)
            out.backward(grad_out)
            return [out.detach(), *(leaf.grad for leaf in leaves)]

        return train_step


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    description: str
    build: Callable[[torch.device, bool], Case]
    target: Target | None


def _randn(shape: Sequence[int], device: torch.device, dtype: torch.dtype, scale: float = 1.0):
    return (torch.randn(*shape, device=device, dtype=FP32) * scale).to(dtype)


# ---- memory-bound ------------------------------------------------------------------------


def _rows_cols(smoke: bool) -> tuple[int, int]:
    return (64, 256) if smoke else (16384, 8192)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def _build_softmax(device: torch.device, smoke: bool) -> Case:
    m, n = _rows_cols(smoke)
    x = _randn((m, n), device, BF16)
    return Case(softmax, (x,), 2 * nbytes(x), 0, BF16, f"{m}x{n} bf16")


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def _build_layer_norm(device: torch.device, smoke: bool) -> Case:
    m, n = _rows_cols(smoke)
    x, w, b = _randn((m, n), device, BF16), _randn((n,), device, BF16), _randn((n,), device, BF16)
    return Case(layer_norm, (x, w, b), nbytes(x, w, b) + nbytes(x), 0, BF16, f"{m}x{n} bf16")


def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
    return (y * w.float()).to(x.dtype)


def _build_rms_norm(device: torch.device, smoke: bool) -> Case:
    m, n = _rows_cols(smoke)
    x, w = _randn((m, n), device, BF16), _randn((n,), device, BF16)
    return Case(rms_norm, (x, w), nbytes(x, w) + nbytes(x), 0, BF16, f"{m}x{n} bf16 (fp32 math)")


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(x + bias)


def _build_bias_gelu(device: torch.device, smoke: bool) -> Case:
    m, n = _rows_cols(smoke)
    x, bias = _randn((m, n), device, BF16), _randn((n,), device, BF16)
    return Case(bias_gelu, (x, bias), nbytes(x, bias) + nbytes(x), 0, BF16, f"{m}x{n} bf16")


def add_layer_norm(
    x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual
    return h, F.layer_norm(h, (h.shape[-1],), w, b, eps=1e-5)


def _build_add_layer_norm(device: torch.device, smoke: bool) -> Case:
    m, n = _rows_cols(smoke)
    x, r = _randn((m, n), device, BF16), _randn((m, n), device, BF16)
    w, b = _randn((n,), device, BF16), _randn((n,), device, BF16)
    moved = nbytes(x, r, w, b) + 2 * nbytes(x)  # writes h and the normalized output
    return Case(add_layer_norm, (x, r, w, b), moved, 0, BF16, f"{m}x{n} bf16")


def column_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=0)


def _build_column_sum(device: torch.device, smoke: bool) -> Case:
    m, n = (64, 256) if smoke else (8192, 16384)
    x = _randn((m, n), device, FP32)
    return Case(column_sum, (x,), nbytes(x) + n * 4, 0, FP32, f"{m}x{n} fp32 -> {n}")


def transpose_add(x: torch.Tensor) -> torch.Tensor:
    return x + x.t()


def _build_transpose_add(device: torch.device, smoke: bool) -> Case:
    n = 128 if smoke else 8192
    x = _randn((n, n), device, FP32)
    return Case(transpose_add, (x,), 2 * nbytes(x), 0, FP32, f"{n}x{n} fp32")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def _build_cross_entropy(device: torch.device, smoke: bool) -> Case:
    m, n = (64, 1000) if smoke else (8192, 32000)
    logits = _randn((m, n), device, FP32)
    target = torch.randint(0, n, (m,), device=device)
    moved = nbytes(logits, target) + 4  # a scalar mean loss
    return Case(cross_entropy, (logits, target), moved, 0, FP32, f"{m}x{n} fp32, mean")


# ---- GEMM with epilogue ----------------------------------------------------------------


def gemm_bias_relu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.relu(a @ b + bias)


def _build_gemm_bias_relu(device: torch.device, smoke: bool) -> Case:
    m = n = k = 64 if smoke else 8192
    s = k**-0.25  # unit-variance products
    a, b = _randn((m, k), device, BF16, s), _randn((k, n), device, BF16, s)
    bias = _randn((n,), device, BF16)
    out_bytes = m * n * 2
    return Case(
        gemm_bias_relu, (a, b, bias), nbytes(a, b, bias) + out_bytes, 2 * m * n * k, BF16,
        f"{m}x{n}x{k} bf16",
    )  # fmt: skip


def mlp_gelu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ w1) @ w2


def _build_mlp_gelu(device: torch.device, smoke: bool) -> Case:
    m, d, h = (64, 64, 176) if smoke else (4096, 4096, 11008)
    s = d**-0.25
    x, w1 = _randn((m, d), device, BF16, s), _randn((d, h), device, BF16, s)
    w2 = _randn((h, d), device, BF16, h**-0.5)
    flops = 2 * m * d * h * 2
    return Case(
        mlp_gelu, (x, w1, w2), nbytes(x, w1, w2) + m * d * 2, flops, BF16,
        f"x {m}x{d}, w1 {d}x{h}, w2 {h}x{d} bf16",
    )  # fmt: skip


# ---- training step ---------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block: causal attention written in plain ops, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, seq: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.register_buffer("mask", torch.ones(seq, seq, dtype=torch.bool).triu(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        scores = scores.masked_fill(self.mask[:s, :s], float("-inf"))
        attn = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        y = (attn @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def block_forward_flops(batch: int, seq: int, dim: int) -> int:
    """Matmul flops of one forward: 24*d^2 per token in the linears, 4*s*d in attention."""
    tokens = batch * seq
    return tokens * (24 * dim * dim + 4 * seq * dim)


def _build_block_train(device: torch.device, smoke: bool) -> Case:
    batch, seq, dim, heads = (2, 16, 32, 2) if smoke else (8, 1024, 1024, 16)
    block = Block(dim, heads, seq).to(device=device, dtype=BF16)
    x = _randn((batch, seq, dim), device, BF16).requires_grad_(True)
    grad_out = _randn((batch, seq, dim), device, BF16)
    params = list(block.parameters())
    leaves = [x, *params]
    # read x, params, mask and grad_out; write the output and a grad for every leaf
    moved = 2 * nbytes(*leaves) + nbytes(block.mask, grad_out) + nbytes(x)
    return Case(
        block, (x,), moved, 3 * block_forward_flops(batch, seq, dim), BF16,
        f"batch {batch}, seq {seq}, dim {dim}, {heads} heads, bf16, fwd+bwd",
        grad_leaves=leaves, grad_out=grad_out,
    )  # fmt: skip


WORKLOADS: tuple[Workload, ...] = (
    Workload("softmax", MEMORY, "softmax over rows", _build_softmax, targets.MEMORY),
    Workload("layer_norm", MEMORY, "layer_norm, weight+bias", _build_layer_norm, targets.MEMORY),
    Workload("rms_norm", MEMORY, "rms_norm in fp32, cast back", _build_rms_norm, targets.MEMORY),
    Workload("bias_gelu", MEMORY, "gelu(x + bias)", _build_bias_gelu, targets.MEMORY),
    Workload(
        "add_layer_norm",
        MEMORY,
        "h = x + r; (h, layer_norm(h))",
        _build_add_layer_norm,
        targets.MEMORY,
    ),  # fmt: skip
    Workload("column_sum", MEMORY, "x.sum(0)", _build_column_sum, targets.COLUMN_SUM),
    Workload("transpose_add", MEMORY, "x + x.t()", _build_transpose_add, targets.TRANSPOSE_ADD),
    Workload(
        "cross_entropy", MEMORY, "F.cross_entropy, mean", _build_cross_entropy, targets.MEMORY
    ),
    Workload(
        "gemm_bias_relu",
        GEMM,
        "relu(a @ b + bias)",
        _build_gemm_bias_relu,
        targets.GEMM_EPILOGUE,
    ),  # fmt: skip
    Workload("mlp_gelu", GEMM, "gelu(x @ w1) @ w2", _build_mlp_gelu, targets.GEMM_EPILOGUE),
    Workload(
        "transformer_block_train",
        TRAINING,
        "one forward+backward of a transformer block",
        _build_block_train,
        None,
    ),  # fmt: skip
)

BY_NAME = {w.name: w for w in WORKLOADS}


def select(only: Sequence[str] | None) -> list[Workload]:
    """The workloads named in ``only`` (all when empty), in suite order.

    Raises ``ValueError`` naming the unknown names and the known ones.
    """
    if not only:
        return list(WORKLOADS)
    unknown = [n for n in only if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    wanted = set(only)
    return [w for w in WORKLOADS if w.name in wanted]
