"""The C++ launch of a built GEMM template kernel (``plugin.CppLaunch``), for core's C++ wrapper.

Why a template needs more than a pointwise kernel: its module launches through Triton's JIT
(``KERNEL[grid](...)``), which picks a specialization from the argument values on each call,
so there is no single compiled kernel to hand over. The C++ wrapper runs one graph whose
sizes and strides are fixed, so the kernel is compiled here for exactly those values
(``JITFunction.warmup``, nothing launched) and its cubin launched like a pointwise kernel's
(``tilefuse_triton.cpp_launch``), with the sizes and strides baked in.

``launch_plan(module, inputs, layout)`` derives the launch from the module's ``arguments``
on meta tensors (no memory); ``render_gemm_launch(compiled, plan, device)`` writes the C++.
The launch function takes the tensors in ``Choice`` order (the op's inputs, the
epilogue's operands, ``out``); the kernel takes ``a, b, out, e0...``: ``tensor_args`` maps one
to the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tilefuse import plugin

from ..cpp_launch import empty_launch, render_cpp_launch
from ..launcher import _SCRATCH_FIELDS, unsupported_reason


@dataclass(frozen=True)
class LaunchPlan:
    """One launch of a template module for fixed layouts.

    ``grid`` is ``None`` when the output is empty (nothing to launch). ``values`` holds
    every declared kernel argument in order (tensors as meta tensors, then sizes, strides
    and constexprs); ``tensor_args[i]`` is the ``Choice``-order index of the tensor behind
    the kernel's ``i``-th argument; ``num_tensors`` counts the launch function's tensors.
    """

    grid: tuple[int, ...] | None
    values: tuple[Any, ...]
    constexprs: dict[str, Any]
    tensor_args: tuple[int, ...]
    num_tensors: int


def launch_plan(
    module: Any, inputs: Sequence[plugin.TensorSpec], layout: plugin.TensorSpec
) -> LaunchPlan:
    """The launch of ``module`` (a rendered template) on tensors of ``inputs`` / ``layout``.

    Raises ``ValueError`` when a kernel argument is a tensor that is not one of them.
    """
    import torch

    tensors = [_meta(spec) for spec in (*inputs, layout)]
    grid, args, constexprs = module.arguments(*tensors[:-1], out=tensors[-1])
    if grid is None:
        return LaunchPlan(None, (), {}, (), len(tensors))
    index = {id(t): i for i, t in enumerate(tensors)}
    feeds = []
    for arg in args:
        if not isinstance(arg, torch.Tensor):
            break
        if id(arg) not in index:
            raise ValueError("a GEMM template argument is a tensor it was not given")
        feeds.append(index[id(arg)])
    values = (*args, *constexprs.values())
    return LaunchPlan(tuple(grid), values, dict(constexprs), tuple(feeds), len(tensors))


def _meta(spec: plugin.TensorSpec) -> Any:
    import torch

    return torch.empty_strided(spec.shape, spec.stride, dtype=spec.torch_dtype(), device="meta")


def warm_args(plan: LaunchPlan, device: Any) -> list[Any]:
    """The plan's arguments for ``JITFunction.warmup``: every tensor as a fresh one-element
    tensor of its dtype on ``device`` (16-byte aligned, as the wrapper's tensors are; a
    warmup reads only dtypes, alignment and the integers)."""
    import torch

    n = len(plan.tensor_args)
    args = [torch.empty(1, dtype=t.dtype, device=device) for t in plan.values[:n]]
    return [*args, *plan.values[n : len(plan.values) - len(plan.constexprs)]]


def render_gemm_launch(compiled: Any, plan: LaunchPlan, device: int) -> plugin.CppLaunch | None:
    """The ``CppLaunch`` of ``compiled`` (the kernel built for ``plan``), or ``None`` when
    its cubin cannot be launched directly (``launcher.unsupported_reason``)."""
    if plan.grid is None:
        return empty_launch(plan.num_tensors)
    if unsupported_reason(compiled) is not None:
        return None
    metadata = compiled.metadata
    n = len(plan.tensor_args)
    return render_cpp_launch(
        kernel_name=metadata.name,
        cubin=compiled.asm["cubin"],
        signature=list(compiled.src.signature.values()),
        values=[*([None] * n), *plan.values[n:]],
        num_tensors=plan.num_tensors,
        grid=plan.grid[0],
        num_warps=int(metadata.num_warps),
        shared=int(metadata.shared),
        device=device,
        scratch_params=sum(hasattr(metadata, f) for f in _SCRATCH_FIELDS),
        tensor_args=plan.tensor_args,
    )
