"""The sweep's data: cases it cannot judge by comparing with eager, and tolerances.

Every entry states why. An entry is a limit of eager comparison itself (random output,
undefined output), never a tilefuse bug: a bug is fixed, or the op is made an extern.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.testing._internal.common_device_type import toleranceOverride
from torch.testing._internal.opinfo.core import DecorateInfo, OpInfo

from . import cases

# OpInfo full name -> why its output cannot be compared with eager's.
_JITERATOR = (
    "a test of torch.cuda.jiterator, which builds CUDA kernels from C++ strings at run "
    "time: not an aten op, no CPU kernel, and Dynamo calls it as an opaque function"
)
SKIP: dict[str, str] = {
    "jiterator_binary": _JITERATOR,
    "jiterator_binary_return_by_ref": _JITERATOR,
    "jiterator_unary": _JITERATOR,
}

# OpInfo full name -> why Dynamo hands tilefuse no graph for it: the op runs eagerly
# under torch.compile whatever the backend, so its cases only check that nothing breaks.
NO_GRAPH: dict[str, str] = {
    "nn.functional.rrelu": (
        "Dynamo cannot trace rrelu (it builds a pybind11 object) and runs it eagerly"
    ),
}

# Case id -> (the first torch version that gets it right, why older ones cannot). Such a
# case is an expected failure (strict: it must fail) on older torch, a normal case after.
TORCH_LIMIT: dict[str, tuple[tuple[int, int], str]] = {
    "index_fill-float32-5": (
        (2, 13),
        "torch 2.11's fake kernel for aten._unique (in index_fill's gradient for a tensor "
        "value) reports 1 element where the real op returns 3; tilefuse refuses the graph "
        "with a CompileError instead of writing 3 elements into a 1-element buffer (outside "
        "strict mode the graph runs eagerly). torch 2.13 makes _unique's size dynamic",
    ),
}


def torch_limit(case_id: str) -> str | None:
    """Why ``case_id`` cannot pass on the running torch, or ``None`` when it can."""
    entry = TORCH_LIMIT.get(case_id)
    if entry is None:
        return None
    fixed_in, reason = entry
    running = tuple(int(part) for part in torch.__version__.split(".")[:2])
    return reason if running < fixed_in else None


# (OpInfo full name, dtype or None for all) -> (rtol, atol) beyond the OpInfo's own, and why.
_ADDCDIV_REWRITE = (
    "Dynamo rewrites torch.addcdiv(a, b, c, value=v) as add(a, mul(div(b, c), v)), each "
    "step rounded to the half type, where eager rounds once: near a + v * b / c == 0 the "
    "graph tilefuse is given differs from eager by a few ulps of the v * b / c term"
)
_POW_GRADIENT_SUM = (
    "pow's gradients with a broadcast operand sum up to 50 terms such as x**y * log(x), "
    "with x and y up to 9 (terms to 4e7) that partly cancel: measured on the H200, tilefuse's "
    "block-tree sum is 1.5e-6 (relative) from the float64 value and eager's 8e-8, the "
    "elementwise steps being the same libdevice pow and products in both; float32 "
    "summation-order noise, 10 times below this rtol"
)
_HALF_STEP_FLIP = (
    "the graph rounds every step to the half type, as tilefuse does; before one such "
    "rounding Triton's exp/log and CUDA's libm differ by an ulp of float32, which flips "
    "a rounding that lies near a tie, and the next step (a subtraction that cancels, or a "
    "weight up to 9) magnifies that one half ulp. Measured on the H200: "
    "bce_with_logits-float16-25 -24.92 against eager's -24.89 (float64: -24.895); "
    "kl_div-bfloat16-9 -0.01410 against eager's -0.01367 (float64: -0.01382)"
)
TOLERANCE: dict[tuple[str, torch.dtype | None], tuple[float, float, str]] = {
    ("nn.functional.binary_cross_entropy_with_logits", torch.float16): (
        2e-3,
        4e-2,
        _HALF_STEP_FLIP,
    ),
    ("nn.functional.kl_div", torch.bfloat16): (3.5e-2, 5e-4, _HALF_STEP_FLIP),
    ("pow", torch.float32): (1e-5, 1e-5, _POW_GRADIENT_SUM),
    ("addcdiv", torch.bfloat16): (1.6e-2, 1e-1, _ADDCDIV_REWRITE),
    ("addcdiv", torch.float16): (1e-3, 1e-2, _ADDCDIV_REWRITE),
}


# Integer division ops -> where the divisor is ("input" or the index into ``args``). An
# integer division by zero has no defined result on CUDA (the CPU raises): eager gives what
# the device's 64-bit division sequence happens to give (e.g. 2**32 - 1 from a 32-bit fast
# path), a kernel another garbage value. Those elements are left out of the comparison.
INTEGER_DIVISOR: dict[str, str | int] = {
    "__rmod__": "input",
    "remainder": 0,
    "fmod": 0,
    "floor_divide": 0,
    "div.floor_rounding": 0,
    "div.trunc_rounding": 0,
}


def mask_undefined(case: cases.Case, device: str, pristine: Any, actual: Any, expected: Any):
    """``(actual, expected)`` with the elements that have no defined value (see
    ``INTEGER_DIVISOR``) set to 0 in both; unchanged for every other case."""
    where = INTEGER_DIVISOR.get(case.name)
    if where is None or case.dtype.is_floating_point or torch.device(device).type != "cuda":
        return actual, expected
    (args, _kwargs) = pristine
    divisor = args[0] if where == "input" else args[1 + int(where)]
    if not isinstance(divisor, torch.Tensor) or not bool((divisor == 0).any()):
        return actual, expected

    def masked(result: Any) -> Any:
        out, inputs = result
        if not isinstance(out, torch.Tensor):
            return result
        zero = (divisor == 0).to(out.device).expand_as(out)
        return out.masked_fill(zero, 0), inputs

    return masked(actual), masked(expected)


def skip_reason(name: str) -> str | None:
    return SKIP.get(name)


def _default(dtype: torch.dtype) -> tuple[float, float]:
    """assert_close's own default (rtol, atol) for ``dtype``; exact for integers."""
    from torch.testing._comparison import default_tolerances

    probe = torch.empty((), dtype=dtype)
    return default_tolerances(probe)


def _opinfo_overrides(op: OpInfo, dtype: torch.dtype, device_type: str) -> list[tuple]:
    """(rtol, atol) pairs that the OpInfo's own ``toleranceOverride`` decorators give
    ``dtype`` on ``device_type`` (in any of its tests)."""
    found = []
    for info in op.decorators:
        if not isinstance(info, DecorateInfo):
            continue
        if info.device_type not in (None, device_type):
            continue
        for decorator in info.decorators:
            if isinstance(decorator, toleranceOverride) and dtype in decorator.d:
                tol = decorator.d[dtype]
                found.append((tol.rtol, tol.atol))
    return found


def tolerance(op: OpInfo, dtype: torch.dtype, device: str) -> tuple[float, float] | None:
    """(rtol, atol) for ``op`` at ``dtype``: assert_close's default for the dtype, widened by
    the OpInfo's own overrides and by ``TOLERANCE``; ``None`` means the plain default."""
    if not (dtype.is_floating_point or dtype.is_complex):
        return None
    rtol, atol = _default(dtype)
    extra = _opinfo_overrides(op, dtype, torch.device(device).type)
    name = cases.full_name(op)
    for key in ((name, dtype), (name, None)):
        if key in TOLERANCE:
            extra.append(TOLERANCE[key][:2])
    if not extra:
        return None
    return max([rtol, *(r for r, _ in extra)]), max([atol, *(a for _, a in extra)])
