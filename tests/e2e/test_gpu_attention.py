"""Models built on ``F.scaled_dot_product_attention`` on the GPU: a Llama-style decoder
and a ViT, bf16 inference and float32 training, for every SDPA backend CUDA offers.

The flash, memory-efficient and cuDNN kernels return ``None`` for some outputs their
meta functions size as tensors; the compiled graph must pass those through as eager does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import tilefuse
from tests.compile_check import assert_same, compiled_reports

pytestmark = pytest.mark.gpu

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return h.to(x.dtype) * self.weight


def rotary(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat((-x2, x1), -1) * sin


class LlamaBlock(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, 4 * dim, bias=False)
        self.up = nn.Linear(dim, 4 * dim, bias=False)
        self.down = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, -1)
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, s, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, vocab: int = 256, dim: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(LlamaBlock(dim, heads) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head_dim = dim // heads

    def forward(self, tokens):
        s = tokens.shape[1]
        pos = torch.arange(s, device=tokens.device, dtype=torch.float32)
        inv = 1.0 / (
            10000 ** (torch.arange(0, self.head_dim, 2, device=tokens.device) / self.head_dim)
        )
        angles = torch.outer(pos, inv)
        angles = torch.cat((angles, angles), -1)
        x = self.embed(tokens)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


class ViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, dim: int = 64, layers: int = 2,
                 heads: int = 4, classes: int = 10) -> None:  # fmt: skip
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), 1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


def _inputs(model_name: str, dtype: torch.dtype):
    if model_name == "llama":
        return Llama(), (torch.randint(0, 256, (2, 64), device="cuda"),)
    return ViT(), (torch.randn(4, 3, 32, 32, device="cuda", dtype=dtype),)


@pytest.mark.parametrize("sdpa", list(SDPA_BACKENDS), ids=str)
@pytest.mark.parametrize("model_name", ["llama", "vit"])
def test_bf16_inference(model_name, sdpa):
    torch.manual_seed(0)
    model, inputs = _inputs(model_name, torch.bfloat16)
    model = model.cuda().to(torch.bfloat16).eval()
    with torch.no_grad(), sdpa_kernel(SDPA_BACKENDS[sdpa]):
        try:
            expected = model(*inputs)
        except RuntimeError as exc:  # this backend cannot serve these shapes on this GPU
            pytest.skip(f"eager SDPA {sdpa} unavailable here: {exc}")
        actual, _ = compiled_reports(model, *inputs)
    assert_same(actual, expected, torch.bfloat16)
    if sdpa != "math":  # the math backend decomposes into ops tilefuse compiles itself
        assert tilefuse.stats()["externs"] >= 1  # the fused attention kernel is an extern


@pytest.mark.parametrize("sdpa", ["flash", "efficient", "math"], ids=str)
@pytest.mark.parametrize("model_name", ["llama", "vit"])
def test_training_step_matches_eager(model_name, sdpa):
    """Forward and backward, SDPA's backward kernels consuming its saved outputs: the
    loss and every parameter's gradient match eager's. Flash attention serves half
    dtypes only, so that case trains in bf16."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if sdpa == "flash" else torch.float32
    eager_model, inputs = _inputs(model_name, dtype)
    eager_model = eager_model.cuda().to(dtype)
    compiled_model = _inputs(model_name, dtype)[0].cuda().to(dtype)
    compiled_model.load_state_dict(eager_model.state_dict())
    with sdpa_kernel(SDPA_BACKENDS[sdpa]):
        expected = eager_model(*inputs)
        seed = torch.randn_like(expected)
        (expected.float() * seed).sum().backward()
        tilefuse.reset()
        torch._dynamo.reset()
        actual = torch.compile(compiled_model, backend="tilefuse")(*inputs)
        (actual.float() * seed).sum().backward()
    assert tilefuse.stats()["graphs_fallen_back"] == 0
    assert tilefuse.stats()["graphs_compiled"] >= 2  # forward and backward
    assert_same(actual, expected, dtype)
    for (name, p_eager), p_compiled in zip(
        eager_model.named_parameters(), compiled_model.parameters()
    ):
        scale = p_eager.grad.abs().max().item() + 1e-6
        rtol, atol = (5e-2, 2e-2 * scale) if dtype == torch.bfloat16 else (1e-3, 1e-4 * scale)
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"grad of {n}: {m}")  # fmt: skip


def test_a_mask_expanded_over_keys_keeps_a_fused_attention_kernel():
    """A padding mask ``expand``-ed over the key dim (transformers builds BERT's so while
    tracing) made SDPA pick its math path when traced: two float32 batched GEMMs and a
    softmax. tilefuse makes the mask contiguous first: the fused kernel runs as an extern,
    with eager's values."""
    q, k, v = (torch.randn(4, 12, 128, 64, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    keep = torch.rand(4, 128, device="cuda") > 0.1

    def fn(q, k, v, keep):
        mask = keep[:, None, :, None].expand(4, 1, 128, 128)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    with torch.no_grad():
        actual, reports = compiled_reports(fn, q, k, v, keep)
    assert_same(actual, fn(q, k, v, keep), torch.bfloat16)
    externs = {name for r in reports for name in r.externs}
    assert any("attention" in name for name in externs), [r.format() for r in reports]
    assert not any(k.kind.startswith("template") for r in reports for k in r.kernels)


def test_a_mask_expanded_over_keys_in_training_matches_eager_gradients():
    """The same mask with q, k and v requiring grad and two query rows whose keys are all
    masked: the mask is left as it is (the fused backward of such a row is not the math
    path's), and the gradients are eager's, with no NaN."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (2, 4, 192, 64)
    q, k, v = (torch.randn(shape, device="cuda", generator=gen) for _ in "qkv")
    keep = torch.ones(2, 192, dtype=torch.bool, device="cuda")
    keep[0, 7] = keep[1, 100] = False

    def fn(q, k, v, keep):
        mask = keep[:, None, :, None].expand(2, 1, 192, 192)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    twins = [t.clone().requires_grad_() for t in (q, k, v)]
    seed = torch.randn(shape, device="cuda", generator=gen)
    (fn(*leaves, keep) * seed).sum().backward()
    tilefuse.reset()
    torch._dynamo.reset()
    (torch.compile(fn, backend="tilefuse")(*twins, keep) * seed).sum().backward()
    assert tilefuse.stats()["graphs_compiled"] >= 2
    for eager, compiled in zip(leaves, twins, strict=True):
        assert not compiled.grad.isnan().any()
        torch.testing.assert_close(compiled.grad, eager.grad, rtol=1e-3, atol=1e-4)
