"""Run one sweep case: compile the op with tilefuse, compare against eager.

``run_case`` compiles ``lambda *args: op(*args, **kwargs)`` for one OpInfo sample with
``torch.compile(backend="tilefuse")`` in strict mode (a graph that cannot compile raises
instead of running eagerly; an op without a lowering is an explicit extern inside the
graph), compares every output with ``torch.testing.assert_close`` at the dtype's
tolerance, and for float32 samples that require grad compares the input gradients too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

from . import cases, known


def _clone(tree: Any) -> Any:
    """A copy of every tensor of ``tree`` as a fresh leaf that keeps ``requires_grad``."""

    def copy(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().clone().requires_grad_(x.requires_grad)
        return x

    return pytree.tree_map(copy, tree)


def _grad_leaves(tree: Any) -> list[torch.Tensor]:
    leaves, _ = pytree.tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]


def _differentiable(out: Any) -> list[torch.Tensor]:
    leaves, _ = pytree.tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]


def _gradients(outs: list[torch.Tensor], wrt: list[torch.Tensor], seeds: list[torch.Tensor]):
    grads = torch.autograd.grad(outs, wrt, seeds, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]


def _stats() -> dict[str, int]:
    import tilefuse

    return tilefuse.stats()


def compare(actual: Any, expected: Any, tolerance: tuple[float, float] | None, what: str) -> None:
    """``assert_close`` at ``tolerance`` (rtol, atol), or the dtype's default when ``None``."""
    kwargs: dict[str, Any] = {}
    if tolerance is not None:
        kwargs = {"rtol": tolerance[0], "atol": tolerance[1]}
    torch.testing.assert_close(
        actual, expected, equal_nan=True, check_stride=False, msg=lambda m: f"{what}: {m}",
        **kwargs,
    )  # fmt: skip


def run_case(case: cases.Case, device: str) -> None:
    """Compile ``case`` on ``device`` strictly and compare outputs and gradients to eager."""
    op = case.op
    samples = cases.samples(op, device, case.dtype)
    if case.index >= len(samples):
        raise AssertionError(
            f"{case.id}: the OpInfo gives {len(samples)} samples on {device}, not {case.index + 1}"
        )
    sample = samples[case.index]
    tolerance = known.tolerance(op, case.dtype, device)
    call: Callable[..., Any] = op.op

    eager_args, eager_kwargs = _clone(((sample.input, *sample.args), sample.kwargs))
    comp_args, comp_kwargs = _clone(((sample.input, *sample.args), sample.kwargs))

    expected = call(*eager_args, **eager_kwargs)

    def fn(*args: Any) -> Any:
        return call(*args, **comp_kwargs)

    before = _stats()
    os.environ["TILEFUSE_STRICT"] = "1"
    torch._dynamo.reset()
    try:
        actual = torch.compile(fn, backend="tilefuse")(*comp_args)
        compare(actual, expected, tolerance, f"{case.id} forward [{cases.describe(sample)}]")
        _check_backward(sample, case, tolerance, eager_args, eager_kwargs, expected,
                        comp_args, comp_kwargs, actual)  # fmt: skip
    finally:
        os.environ.pop("TILEFUSE_STRICT", None)
        torch._dynamo.reset()
    after = _stats()
    fallen = after["graphs_fallen_back"] - before["graphs_fallen_back"]
    assert fallen == 0, f"{case.id}: {fallen} graph(s) fell back to eager"


def _check_backward(sample, case, tolerance, eager_args, eager_kwargs, expected, comp_args,
                    comp_kwargs, actual) -> None:  # fmt: skip
    """Compare gradients of a seeded random cotangent, for float32 samples that need them."""
    if case.dtype != torch.float32 or not case.op.supports_autograd:
        return
    wrt_eager = _grad_leaves((eager_args, eager_kwargs))
    wrt_comp = _grad_leaves((comp_args, comp_kwargs))
    if not wrt_eager:
        return
    outs_eager = _differentiable(sample.output_process_fn_grad(expected))
    outs_comp = _differentiable(sample.output_process_fn_grad(actual))
    if not outs_eager:
        return
    assert len(outs_comp) == len(outs_eager), (
        f"{case.id}: compiled outputs that need grad: {len(outs_comp)}, eager: {len(outs_eager)}"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cases.seed_of(case.name, case.dtype) + 1)
        seeds = [torch.randn(o.shape, dtype=o.dtype).to(o.device) for o in outs_eager]
    grads_eager = _gradients(outs_eager, wrt_eager, seeds)
    grads_comp = _gradients(outs_comp, wrt_comp, seeds)
    compare(grads_comp, grads_eager, tolerance, f"{case.id} backward [{cases.describe(sample)}]")
