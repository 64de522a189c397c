"""Elementwise lowerings against eager: dtypes, broadcasting, scalars, odd shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, kernel_count

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

UNARY = {
    "abs": torch.abs, "neg": torch.neg, "exp": torch.exp, "exp2": torch.exp2,
    "expm1": torch.expm1, "log": lambda x: torch.log(x.abs() + 0.5),
    "log2": lambda x: torch.log2(x.abs() + 0.5), "log1p": lambda x: torch.log1p(x.abs()),
    "sqrt": lambda x: torch.sqrt(x.abs()), "rsqrt": lambda x: torch.rsqrt(x.abs() + 0.1),
    "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil, "trunc": torch.trunc,
    "round": torch.round, "sign": torch.sign, "reciprocal": lambda x: torch.reciprocal(x + 3),
    "relu": torch.relu, "silu": F.silu, "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "atan": torch.atan,
    "asinh": torch.asinh, "sinh": torch.sinh, "leaky_relu": F.leaky_relu,
}  # fmt: skip

BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul,
    "div": lambda a, b: a / (b.abs() + 0.5), "maximum": torch.maximum,
    "minimum": torch.minimum, "pow": lambda a, b: a.abs().pow(b),
    "add_alpha": lambda a, b: torch.add(a, b, alpha=2.5), "atan2": torch.atan2,
    "remainder": lambda a, b: torch.remainder(a, b.abs() + 0.5),
    "floor_divide": lambda a, b: torch.floor_divide(a, b.abs() + 0.5),
}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, dtype):
    x = torch.randn(7, 13).to(dtype)
    check(UNARY[name], x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_with_broadcast(name, dtype):
    if name in ("remainder", "floor_divide") and dtype != torch.float32:
        pytest.skip("jumps at integer quotients: half rounding of a/b flips floor() either way")
    a = torch.randn(7, 13).to(dtype)
    b = torch.randn(13).to(dtype)
    check(BINARY[name], a, b, dtype=dtype)


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons_and_logic(op):
    a = torch.randn(5, 6)
    b = torch.randn(5, 6)

    def fn(a, b):
        c = getattr(torch, op)(a, b)
        return torch.logical_and(c, a > 0), torch.logical_or(c, b > 0), torch.logical_not(c)

    check(fn, a, b)


def test_type_promotion_scalars_and_casts():
    a = torch.randint(-5, 5, (6, 7))
    b = torch.randn(7, dtype=torch.float16)

    def fn(a, b):
        return a * 2.5 + b, (a // 3) + (a % 3), a.to(torch.float32) / 7, (a > 0).to(torch.int32) + 1

    check(fn, a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_where_and_clamp(dtype):
    a = torch.randn(9, 11).to(dtype)
    b = torch.randn(9, 1).to(dtype)
    check(lambda a, b: torch.where(a > b, a, b * 2).clamp(-0.5, 1.0) + a.clamp(min=0), a, b,
          dtype=dtype)  # fmt: skip


@pytest.mark.parametrize(
    "shape",
    [(1,), (7, 13, 257), (1, 1, 5), (0, 4), (3, 0, 2)],
    ids=["one", "primes", "ones", "zero-rows", "zero-mid"],
)
def test_odd_shapes(shape):
    x = torch.randn(shape)
    check(lambda x: torch.sigmoid(x) * 2 - x, x)


def test_non_contiguous_and_scalar_tensor_inputs():
    x = torch.randn(8, 6).t()  # transposed input
    s = torch.tensor(3.0)  # 0-dim tensor
    y = torch.randn(4, 8, 6)[:, ::2, 1:]  # strided slice
    check(lambda x, s, y: (x * s + 1, y.exp() * s), x, s, y)


def test_gelu_bias_is_one_kernel():
    x = torch.randn(8, 33)
    b = torch.randn(33)
    reports = check(lambda x, b: F.gelu(x + b), x, b)
    assert kernel_count(reports) == 1


@pytest.mark.parametrize("alpha", [False, True])
def test_bool_add_honours_alpha(alpha):
    """``a + alpha * b`` on bools: with ``alpha=False`` the result is ``a`` (was ``a | b``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 5, generator=g) > 0.5
    b = torch.rand(5, 5, generator=g) > 0.5

    def fn(a, b):
        return torch.add(a, b, alpha=alpha)

    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(fn, backend="tilefuse")(a, b), fn(a, b))


@pytest.mark.filterwarnings("error:tl.where with a non-boolean condition")
def test_bool_bitwise_ops_give_boolean_conditions():
    """``mask & True`` feeding a ``where`` (a causal mask, say): the condition stays a
    boolean in the kernel (Triton deprecates ``tl.where`` on an int32)."""

    def fn(x, a, b):
        keep = (a > 0) & True
        keep = (keep | (b > 1)) ^ (a > b)
        return torch.where(keep & (x > -1), x, torch.zeros_like(x))

    g = torch.Generator().manual_seed(0)
    x, a, b = (torch.randn(33, generator=g) for _ in range(3))
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(fn, backend="tilefuse")(x, a, b), fn(x, a, b))
