"""Does a backend's result match eager's? Dtype-appropriate tolerances, one message on mismatch.

Two criteria, chosen by the workload:
- ``elementwise``: every element within ``atol * rms(expected) + rtol * |expected|``
  (memory-bound work, where only rounding of a few operations separates two correct
  implementations). ``atol`` is scaled by the reference's root mean square so that outputs of
  small magnitude, such as the rows of a softmax over 8192 columns, are still really checked;
- ``norm``: ``||actual - expected|| / ||expected|| <= rel`` (matmuls and training, where the
  accumulation order legitimately differs and a few elements can drift more than the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    rel_norm: float


TOLERANCES = {
    torch.float32: Tolerance(rtol=1e-4, atol=1e-5, rel_norm=1e-4),
    torch.float16: Tolerance(rtol=5e-3, atol=5e-3, rel_norm=5e-3),
    torch.bfloat16: Tolerance(rtol=1.6e-2, atol=1e-2, rel_norm=1e-2),
}


def tolerance_for(dtype: torch.dtype, loosen: float = 1.0) -> Tolerance:
    """The tolerance for results computed in ``dtype``, every bound multiplied by ``loosen``."""
    base = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return Tolerance(base.rtol * loosen, base.atol * loosen, base.rel_norm * loosen)


def _one(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance, norm: bool) -> str | None:
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} != eager's {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} != eager's {expected.dtype}"
    a = actual.detach().double()
    e = expected.detach().double()
    if not torch.isfinite(a).eq(torch.isfinite(e)).all():
        return "non-finite values where eager has finite ones (or the reverse)"
    finite = torch.isfinite(e)
    a, e = a[finite], e[finite]
    if a.numel() == 0:
        return None
    diff = (a - e).abs()
    if norm:
        rel = (diff.norm() / e.norm().clamp_min(1e-30)).item()
        if rel > tol.rel_norm:
            return f"relative L2 error {rel:.3g} > {tol.rel_norm:.3g}"
        return None
    atol = tol.atol * e.square().mean().sqrt().item()
    bad = diff > atol + tol.rtol * e.abs()
    if bad.any():
        worst = diff.max().item()
        return (
            f"{int(bad.sum())} of {a.numel()} elements off (max abs error {worst:.3g}; "
            f"rtol={tol.rtol:.3g}, atol={tol.atol:.3g} x rms {atol / tol.atol:.3g})"
        )
    return None


def mismatch(
    actual: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    tol: Tolerance,
    norm: bool = False,
) -> str | None:
    """``None`` when every output matches, else one line naming the first output that does not."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, eager returns {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a is None or e is None:
            if a is not e:
                return f"output {i}: None where eager has a tensor (or the reverse)"
            continue
        problem = _one(a, e, tol, norm)
        if problem:
            return f"output {i}: {problem}"
    return None
