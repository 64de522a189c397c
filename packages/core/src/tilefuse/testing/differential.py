"""Running one differential case: compile with tilefuse on the backend under test, in
strict mode, and compare with eager on the same inputs.

A case passes only when the graph really compiled (``tilefuse.stats()``: a graph
compiled, none fell back, kernels were built, no op ran as an eager extern) and every
output matches eager in dtype, shape and value.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

import tilefuse

from .. import plugin
from .cases import Arg, Case
from .report import CaseFailed, CaseSkipped
from .settings import environment

# (rtol, atol) by output dtype; integers and bool compare exactly.
TOLERANCE = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def make_input(arg: Arg, dtype: str, device: str, generator: torch.Generator) -> torch.Tensor:
    """A tensor for ``arg`` (its own dtype, else ``dtype``) on ``device``: N(0, 1) for
    floating dtypes, -8..8 for signed integers, 0..15 for unsigned, random bools."""
    torch_dtype = plugin.dtype_from_name(arg.dtype or dtype)
    shape = arg.shape[:-2] + arg.shape[-2:][::-1] if arg.transposed else arg.shape
    if torch_dtype.is_floating_point:
        x = torch.randn(shape, generator=generator)
    elif torch_dtype == torch.bool:
        x = torch.rand(shape, generator=generator) > 0.5
    elif torch_dtype.is_signed:
        x = torch.randint(-8, 9, shape, generator=generator)
    else:
        x = torch.randint(0, 16, shape, generator=generator)
    x = x.to(device=device, dtype=torch_dtype)
    return x.transpose(-1, -2) if arg.transposed else x


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _flat(item)]
    return [value]


def _cause(exc: BaseException) -> BaseException:
    """The error tilefuse raised, under Dynamo's ``BackendCompilerFailed`` wrapper."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__
    return _cause(inner) if isinstance(inner, BaseException) and inner is not exc else exc


def _describe(exc: BaseException) -> str:
    cause = _cause(exc)
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def compare(actual: Any, expected: Any) -> str | None:
    """Why ``actual`` differs from eager's ``expected`` (dtype, shape or values), or ``None``."""
    got, want = _flat(actual), _flat(expected)
    if len(got) != len(want):
        return f"{len(got)} output(s), eager gives {len(want)}"
    for i, (a, e) in enumerate(zip(got, want)):
        where = f"output {i}: " if len(want) > 1 else ""
        if not isinstance(a, torch.Tensor):
            return f"{where}got {type(a).__name__}, eager gives a tensor"
        rtol, atol = TOLERANCE.get(e.dtype, (0.0, 0.0))
        try:
            torch.testing.assert_close(
                a, e, rtol=rtol, atol=atol, equal_nan=True, check_dtype=True, check_stride=False
            )
        except AssertionError as err:
            detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
            return f"{where}differs from eager: {detail}"
    return None


def run_case(case: Case, dtype: str, backend: str, device: str, seed: int = 0) -> None:
    """Compile ``case.fn`` with only ``backend`` and strict mode, on ``device`` inputs of
    ``dtype`` (for args without their own); raise ``CaseFailed`` saying what went wrong.

    Resets Dynamo (``torch._dynamo.reset()``) first, so that the case compiles afresh.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = [make_input(a, dtype, device, generator) for a in case.args]
    with warnings.catch_warnings():  # e.g. numpy's divide-by-zero inside an interpreter
        warnings.simplefilter("ignore")
        expected = case.fn(*(x.clone() for x in inputs))
        torch._dynamo.reset()
        before = tilefuse.stats()
        compiled = torch.compile(case.fn, backend="tilefuse", fullgraph=True, dynamic=False)
        with environment(TILEFUSE_BACKENDS=backend, TILEFUSE_STRICT="1"):
            try:
                actual = compiled(*inputs)
            except Exception as exc:
                raise CaseFailed(f"compiling or running failed: {_describe(exc)}") from None
    after = tilefuse.stats()
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    if grew["graphs_compiled"] < 1 or grew["graphs_fallen_back"] > 0:
        raise CaseFailed(f"the graph did not compile with tilefuse (stats grew by {grew})")
    if grew["kernels_compiled"] < 1:
        raise CaseFailed(f"no kernel was built: the work ran elsewhere (stats grew by {grew})")
    if grew["externs"] > 0:
        raise CaseFailed(f"{grew['externs']} op(s) ran eagerly as externs (stats grew by {grew})")
    problem = compare(actual, expected)
    if problem:
        raise CaseFailed(problem)


def check_supported(case: Case, base: str, declared: tuple[str, ...], caps: frozenset[str]) -> str:
    """The dtype ``case`` runs in; raises ``CaseSkipped`` when the backend does not declare
    what it needs (a capability or a dtype)."""
    if case.capability not in caps:
        raise CaseSkipped(f"the backend does not declare capability {case.capability!r}")
    dtype = case.dtype or base
    missing = sorted(case.dtypes(base) - set(declared))
    if missing:
        raise CaseSkipped(f"the backend does not declare dtype(s) {', '.join(missing)}")
    if case.floating and not plugin.dtype_from_name(dtype).is_floating_point:
        raise CaseSkipped(f"needs a floating dtype; the backend's first is {dtype}")
    return dtype
