"""Numerics that must equal eager bit for bit: rounding, casts, integer arithmetic, roll,
integer powers, and ops that kernels cannot express (complex) running as externs.

Integer and cast results are compared exactly; float results that eager computes with
exact IEEE operations (fmod, round) are compared exactly too. Tensors are small: the
Triton interpreter is slow.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, compiled_reports, kernel_count

INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8]
HALF_DTYPES = [torch.float16, torch.bfloat16]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Every case runs on CPU tensors (Triton's interpreter) and, with ``-m gpu``, on CUDA."""
    return request.param


def on(device: str, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return [x.to(device) for x in inputs]


def check_exact(fn, *inputs: Any, device: str = "cpu") -> list[Any]:
    """Compiled (strict) equals eager exactly: same dtype, same bits (NaN matches NaN)."""
    inputs = tuple(on(device, *inputs))
    expected = fn(*inputs)
    actual, reports = compiled_reports(fn, *inputs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
    return reports


def big_ints(n: int, dtype: torch.dtype = torch.int64, signed: bool = True) -> torch.Tensor:
    """Values across the dtype's whole range (beyond 2**53 for int64), no zeros."""
    info = torch.iinfo(dtype)
    lo = info.min + 1 if signed else 1
    x = torch.randint(lo, info.max, (n,), dtype=dtype)
    return torch.where(x == 0, torch.ones_like(x), x)


def small_divisors(n: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Nonzero divisors of both signs, small enough that quotients are interesting."""
    hi = min(1000, torch.iinfo(dtype).max)
    x = torch.randint(1, hi, (n,), dtype=dtype)
    sign = torch.where(torch.rand(n) > 0.5, 1, -1).to(dtype)
    return x * sign


# -- round ----------------------------------------------------------------------------
@pytest.mark.parametrize("decimals", [3, 1, 0, -1, -2])
def test_round_decimals_float32(decimals, device):
    x = torch.randn(37) * 300
    check_exact(lambda v: torch.round(v, decimals=decimals), x, device=device)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("decimals", [2, -1])
def test_round_decimals_half(dtype, decimals, device):
    # Within the dtype's tolerance only: eager itself differs by device here (CPU scales
    # in float32, CUDA rounds to the half dtype after each step); tilefuse does as CPU.
    x = (torch.randn(37) * 50).to(dtype)
    check(lambda v: torch.round(v, decimals=decimals), *on(device, x), dtype=dtype)


def test_round_half_to_even_and_near_ties(device):
    # 0.49999997 + 0.5 rounds up to 1.0 in float32: a floor(x + 0.5) round gets it wrong.
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 8388609.0,
                      1e30, float("inf"), float("nan"), -0.0, 3.5000002])  # fmt: skip
    check_exact(torch.round, x, device=device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_round_half_dtypes(dtype, device):
    x = torch.tensor([0.5, 1.5, 2.5, -2.5, 1024.5, 3.25, -7.75]).to(dtype)
    check_exact(torch.round, x, device=device)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.uint8], ids=str)
@pytest.mark.parametrize("op", [torch.round, torch.floor, torch.ceil, torch.trunc, torch.fix])
def test_rounding_ops_on_ints_are_identity(op, dtype, device):
    x = torch.randint(0 if dtype == torch.uint8 else -100, 100, (37,), dtype=dtype)
    check_exact(lambda v: op(v) * 2, x, device=device)


# -- casts ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_half_round_trip(dtype, device):
    # Random mantissas: truncating instead of rounding to nearest even shows on about half.
    x = torch.randn(8, 13) * 100
    check_exact(lambda v: v.to(dtype).to(torch.float32), x, device=device)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_half_round_trip_ties_and_specials(dtype, device):
    # Exact ties (1 + 2**-8 for bf16, 1 + 2**-11 for fp16), overflow, NaN, inf, -0.
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11, 3.4e38, 65520.0,
                      float("nan"), float("inf"), float("-inf"), -0.0, 1e-40, -1e-30])  # fmt: skip
    check_exact(lambda v: v.to(dtype).to(torch.float32), x, device=device)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_half_output_is_rounded(dtype, device):
    x = torch.randn(37) * 10
    check_exact(lambda v: (v * 1.5).to(dtype), x, device=device)


def test_float64_to_bfloat16_rounds_through_float32(device):
    x = torch.randn(37, dtype=torch.float64) * 1000
    check_exact(lambda v: v.to(torch.bfloat16), x, device=device)


@pytest.mark.parametrize("src", [torch.int64, torch.int32, torch.bool], ids=str)
@pytest.mark.parametrize("dst", HALF_DTYPES, ids=str)
def test_int_to_half(src, dst, device):
    if src == torch.bool:
        x = torch.rand(37) > 0.5
    else:
        x = torch.randint(-(2**20), 2**20, (37,), dtype=src)
    check_exact(lambda v: v.to(dst), x, device=device)


def test_bfloat16_to_float16(device):
    x = (torch.randn(37) * 100).to(torch.bfloat16)
    check_exact(lambda v: v.to(torch.float16), x, device=device)


@pytest.mark.parametrize("dst", [torch.int8, torch.int32, torch.int64, torch.int16], ids=str)
def test_float_to_int_truncates(dst, device):
    x = torch.randn(37) * 40  # within int8's range: out-of-range casts are undefined in C
    check_exact(lambda v: v.to(dst), x, device=device)


def test_float_to_uint8_truncates(device):
    x = torch.rand(37) * 250
    check_exact(lambda v: v.to(torch.uint8), x, device=device)


def test_float_to_bool(device):
    x = torch.tensor([0.0, -0.0, 1.0, -2.5, 1e-30, float("nan"), float("inf"), 0.0])
    check_exact(lambda v: v.to(torch.bool), x, device=device)


def test_int_narrowing_wraps(device):
    x = torch.randint(-100000, 100000, (37,))
    check_exact(lambda v: v.to(torch.int8), x, device=device)


def test_computed_int_to_bool(device):
    x = torch.randint(-3, 3, (37,))
    check_exact(lambda v: (v * 2).to(torch.bool), x, device=device)


@pytest.mark.parametrize("dst", [torch.int32, torch.bfloat16], ids=str)
def test_view_as_another_dtype_keeps_bits(dst, device):
    # x.view(dtype) reinterprets bits; it must not be treated as a no-op reshape.
    x = torch.randn(8, 12)
    check_exact(lambda v: v.view(dst) * 2, x, device=device)


# -- integer arithmetic ---------------------------------------------------------------
INT_BINARY = {
    "fmod": torch.fmod,
    "remainder": torch.remainder,
    "floor_divide": lambda a, b: a // b,
    "mod": lambda a, b: a % b,
    "trunc_div": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "floor_div": lambda a, b: torch.div(a, b, rounding_mode="floor"),
}


@pytest.mark.parametrize("name", sorted(INT_BINARY))
def test_int64_beyond_float_precision(name, device):
    # Operands above 2**53: float math loses the low bits.
    a = big_ints(37)
    b = big_ints(37) // (2**20)
    b = torch.where(b == 0, torch.full_like(b, 7), b)
    check_exact(INT_BINARY[name], a, b, device=device)


@pytest.mark.parametrize("name", sorted(INT_BINARY))
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_int_signs(name, dtype, device):
    a = big_ints(37, dtype)
    b = small_divisors(37, dtype)
    check_exact(INT_BINARY[name], a, b, device=device)


@pytest.mark.parametrize("name", sorted(INT_BINARY))
@pytest.mark.parametrize("divisor", [-7, 3])
def test_int_by_scalar(name, divisor, device):
    a = torch.randint(-1000, 1000, (37,))
    check_exact(lambda v: INT_BINARY[name](v, divisor), a, device=device)


FLOAT_BINARY = {
    "fmod": torch.fmod,
    "remainder": torch.remainder,
    "floor_divide": lambda a, b: a // b,
}


@pytest.mark.parametrize("name", sorted(FLOAT_BINARY))
def test_float_division_family_is_exact(name, device):
    # 1.0 // 0.1 is 9 in eager (floor of the exact quotient), 10 from floor(1.0 / 0.1).
    a = torch.tensor([1.0, -1.0, 1.0, 7.5, -7.5, 7.5, 0.0, -0.0, 5.0, 1e10, 3.0, 1.0])
    b = torch.tensor([0.1, 0.1, -0.1, 2.0, 2.0, -2.0, 3.0, 3.0, 0.0, 3.3, float("inf"), 1e-20])
    a = torch.cat([a, torch.randn(25) * 100])
    b = torch.cat([b, torch.randn(25) * 10])
    check_exact(FLOAT_BINARY[name], a, b, device=device)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_abs_and_neg_of_int_min(dtype, device):
    info = torch.iinfo(dtype)
    x = torch.tensor([info.min, info.min + 1, -1, 0, 1, info.max], dtype=dtype)
    check_exact(lambda v: torch.abs(v) + torch.neg(v), x, device=device)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool], ids=str)
def test_bitwise_ops(dtype, device):
    if dtype == torch.bool:
        a, b = torch.rand(37) > 0.5, torch.rand(37) > 0.5
    else:
        a, b = big_ints(37, dtype), big_ints(37, dtype)

    def fn(x, y):
        return torch.stack([x & y, x | y, x ^ y, ~x])

    check_exact(fn, a, b, device=device)


def test_int_sign_clamp_minmax(device):
    a, b = torch.randint(-50, 50, (37,)), torch.randint(-50, 50, (37,))

    def fn(x, y):
        return torch.sign(x) + torch.clamp(x, -10, 20) * torch.maximum(x, y) - torch.minimum(x, y)

    check_exact(fn, a, b, device=device)


@pytest.mark.parametrize("op", [torch.amax, torch.amin])
def test_bool_max_min_reductions(op, device):
    x = torch.rand(8, 13) > 0.3
    check_exact(lambda v: op(v, 1), x, device=device)


def test_int_true_division_gives_float(device):
    a, b = torch.randint(-1000, 1000, (37,)), small_divisors(37)
    check_exact(lambda x, y: x / y, a, b, device=device)


# -- integer powers -------------------------------------------------------------------
@pytest.mark.parametrize("exponent", [0, 1, 2, 3, 5, 13])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8], ids=str)
def test_int_pow_constant_exponent(exponent, dtype, device):
    x = torch.randint(-100, 100, (37,), dtype=dtype)  # large powers wrap, as in eager
    check_exact(lambda v: v**exponent, x, device=device)


def test_int_pow_tensor_exponent(device):
    base = torch.randint(-5, 6, (37,))
    exp = torch.randint(-3, 40, (37,))
    check_exact(torch.pow, base, exp, device=device)


def test_scalar_base_int_pow(device):
    exp = torch.randint(0, 62, (37,))
    check_exact(lambda e: 2**e, exp, device=device)


def test_bool_pow(device):
    x = torch.rand(37) > 0.5
    check_exact(lambda v: v**2, x, device=device)


def test_uint8_pow_tensor_exponent(device):
    base = torch.randint(0, 255, (37,), dtype=torch.uint8)
    exp = torch.randint(0, 9, (37,), dtype=torch.uint8)
    check_exact(torch.pow, base, exp, device=device)


def test_bool_add_is_logical_or(device):
    a, b = torch.rand(37) > 0.5, torch.rand(37) > 0.5
    check_exact(lambda x, y: torch.stack([x + y, x * y]), a, b, device=device)


def test_float_pow_int_exponent_tensor(device):
    x = torch.randn(37)
    e = torch.randint(-3, 4, (37,))
    check(torch.pow, *on(device, x, e))


# -- roll -----------------------------------------------------------------------------
ROLLS = {
    "1d": (lambda x: torch.roll(x, 3), (37,)),
    "1d_negative": (lambda x: torch.roll(x, -5), (37,)),
    "1d_beyond_size": (lambda x: torch.roll(x, 40), (37,)),
    "flattened_2d": (lambda x: torch.roll(x, 4), (8, 13)),
    "one_dim": (lambda x: torch.roll(x, 2, 1), (8, 13)),
    "two_dims": (lambda x: torch.roll(x, (1, -3), (0, 1)), (8, 13)),
    "same_dim_twice": (lambda x: torch.roll(x, (1, 2), (1, 1)), (8, 13)),
    "then_math": (lambda x: torch.roll(x, 1, 0) * 2 + x, (8, 13)),
}


@pytest.mark.parametrize("name", sorted(ROLLS))
def test_roll(name, device):
    fn, shape = ROLLS[name]
    reports = check_exact(fn, torch.randn(shape), device=device)
    assert kernel_count(reports) >= 1


def test_roll_int(device):
    check_exact(lambda x: torch.roll(x, 2), torch.arange(37), device=device)


# -- complex tensors: externs inside the compiled graph -------------------------------
COMPLEX = {
    "mul_add": lambda a, b: a * b + 1,
    "abs": lambda a, b: torch.abs(a * b),
    "real_then_math": lambda a, b: torch.view_as_real(a + b) * 2.0,
}


@pytest.mark.parametrize("name", sorted(COMPLEX))
def test_complex_runs_as_extern(name, device):
    a = torch.randn(8, dtype=torch.complex64)
    b = torch.randn(8, dtype=torch.complex64)
    reports = check(COMPLEX[name], *on(device, a, b))
    assert any(r.externs for r in reports), "complex ops should be explicit externs"


# -- cross_entropy with a target built inside the function ----------------------------
def target(x: torch.Tensor, values: Any) -> torch.Tensor:
    return torch.tensor(values, device=x.device)


CROSS_ENTROPY = {
    "2d": lambda x: F.cross_entropy(x, target(x, [1, 0, 4, 2])),
    "ignore_index": lambda x: F.cross_entropy(x, target(x, [1, -100, 4, 2])),
    "none": lambda x: F.cross_entropy(x, target(x, [1, 0, 4, 2]), reduction="none"),
    "1d_scalar_target": lambda x: F.cross_entropy(x[0], target(x, 3)),
    "smoothing": lambda x: F.cross_entropy(x, target(x, [1, 0, 4, 2]), label_smoothing=0.1),
}


@pytest.mark.parametrize("name", sorted(CROSS_ENTROPY))
def test_cross_entropy_constant_target(name, device):
    reports = check(CROSS_ENTROPY[name], *on(device, torch.randn(4, 5)))
    assert kernel_count(reports) >= 1


@pytest.mark.parametrize("name", ["2d", "1d_scalar_target"])
def test_cross_entropy_constant_target_backward(name, device):
    reports = check_grad(CROSS_ENTROPY[name], *on(device, torch.randn(4, 5).requires_grad_()))
    assert kernel_count(reports) >= 1


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 6.0)])
def test_hardtanh_forward_and_backward(bounds, device):
    # Values on the bounds too: the gradient there is 0, as in eager.
    x = torch.cat([torch.randn(33) * 4, torch.tensor([-1.0, 1.0, 0.0, 6.0])])
    reports = check_grad(lambda v: F.hardtanh(v, *bounds), *on(device, x.requires_grad_()))
    assert not any(r.externs for r in reports)


def test_scalar_loaded_value_cast(device):
    # A value loaded from a 0-d tensor is a 0-d Triton tensor, not a Python number: a cast
    # must keep it 0-d so that a reduction can broadcast it (cross_entropy's 0-d target).
    x = torch.tensor(3)
    check_exact(lambda v: (v != 2).sum() + v.to(torch.float32), x, device=device)
