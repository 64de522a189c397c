"""The one shared helper that compiles with tilefuse and compares against eager."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

import tilefuse

TOLERANCE = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def compiled_reports(fn: Callable[..., Any], *inputs: Any) -> tuple[Any, list[Any]]:
    """Run ``fn`` compiled by tilefuse (strict: no silent eager fallback)."""
    from tilefuse.report import collect_reports

    os.environ["TILEFUSE_STRICT"] = "1"
    torch._dynamo.reset()
    tilefuse.reset()
    try:
        with collect_reports() as reports:
            out = torch.compile(fn, backend="tilefuse", fullgraph=False)(*inputs)
    finally:
        os.environ.pop("TILEFUSE_STRICT", None)
    assert_compiled()
    return out, reports


def assert_compiled(graphs: int = 1) -> None:
    """At least ``graphs`` graphs compiled since ``tilefuse.reset()``, and none ran eagerly."""
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, f"a graph fell back to eager: {stats}"
    assert stats["graphs_compiled"] >= graphs, f"expected {graphs} compiled graph(s): {stats}"


def assert_same(actual: Any, expected: Any, dtype: torch.dtype | None = None) -> None:
    rtol, atol = TOLERANCE.get(dtype, (1e-4, 1e-4)) if dtype else (1e-4, 1e-4)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True,
                               check_dtype=True, check_stride=False)  # fmt: skip


def check(fn: Callable[..., Any], *inputs: Any, dtype: torch.dtype | None = None) -> list[Any]:
    """Compare compiled against eager on ``inputs``; returns the compile reports."""
    expected = fn(*inputs)
    actual, reports = compiled_reports(fn, *inputs)
    assert_same(actual, expected, dtype)
    return reports


def kernel_count(reports: list[Any]) -> int:
    return sum(len(r.kernels) for r in reports)


def check_grad(
    fn: Callable[..., Any],
    *inputs: torch.Tensor,
    dtype=None,
    compiled_fn: Callable[..., Any] | None = None,
) -> list[Any]:
    """Compare forward values and input gradients (of ``out.sum()``-like loss).

    ``compiled_fn`` (default ``fn``) is what gets compiled: a separate copy of a module, so
    the eager and compiled runs accumulate into different parameters.
    """
    eager_in = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    comp_in = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    expected = fn(*eager_in)
    seed = torch.randn_like(expected)
    (expected * seed).sum().backward()
    actual, reports = compiled_reports(compiled_fn or fn, *comp_in)
    (actual * seed).sum().backward()
    assert_compiled(graphs=2)  # the forward and the backward
    assert_same(actual, expected, dtype)
    for a, e in zip(comp_in, eager_in):
        if e.requires_grad:
            assert_same(a.grad, e.grad, dtype)
    return reports


def check_forward_backward_over_lengths(
    model: torch.nn.Module, lengths: Sequence[int], width: int = 16, device: str = "cpu"
) -> None:
    """Train-step ``model`` (eager) against a deep copy compiled by tilefuse, once per
    sequence length in ``lengths``, on inputs of shape ``(2, length, width)`` whose
    length dimension is marked dynamic: the outputs, the input gradients and the
    parameter gradients (of a random-weighted sum of the output) must match eager at
    every length. Resets Dynamo and tilefuse first; the caller asserts on
    ``tilefuse.stats()`` (how many graphs compiled, and how)."""
    compiled_model = copy.deepcopy(model)
    torch._dynamo.reset()
    tilefuse.reset()
    compiled = torch.compile(compiled_model, backend="tilefuse")
    for length in lengths:
        x = torch.randn(2, length, width, device=device)
        check_train_step(model, compiled_model, compiled, x, dynamic_dim=1)


def check_train_step(
    model: torch.nn.Module,
    compiled_model: torch.nn.Module,
    compiled: Any,
    x: torch.Tensor,
    dynamic_dim: int | None = None,
) -> None:
    """One training step of ``model`` (eager) and of ``compiled`` (``compiled_model``, a
    copy of it, under torch.compile) on ``x``: the outputs, the input gradients and every
    parameter gradient (of a random-weighted sum of the output) must match. Gradients are
    zeroed afterwards. ``dynamic_dim`` marks that dimension of the compiled input dynamic."""
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    if dynamic_dim is not None:
        torch._dynamo.mark_dynamic(xc, dynamic_dim)
    expected, actual = model(xe), compiled(xc)
    assert_same(actual, expected)
    seed = torch.randn_like(expected)
    (expected * seed).sum().backward()
    (actual * seed).sum().backward()
    assert_same(xc.grad, xe.grad)
    pairs = zip(compiled_model.named_parameters(), model.named_parameters())
    for (name, pc), (_, pe) in pairs:
        assert pc.grad is not None, f"no gradient for {name} (shape {tuple(x.shape)})"
        assert_same(pc.grad, pe.grad)
    model.zero_grad()
    compiled_model.zero_grad()
