"""GEMM template steps: ask the autotuner for the fastest choice with the epilogue fused.

The winning ``Choice`` becomes a ``TemplateKernel`` the wrapper calls as
``kernel(a, b, *operands, out=buf)``. The autotuner benchmarks every candidate
with the epilogue fused, so the fused kernel is measured, not assumed.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import plugin
from ..ir.nodes import Buffer
from ..scheduler import TemplateStep

log = logging.getLogger("tilefuse")


def _spec(layout: Any) -> plugin.TensorSpec:
    return plugin.TensorSpec(
        tuple(int(s) for s in layout.size),
        tuple(int(s) for s in layout.stride),
        str(layout.dtype).removeprefix("torch."),
        str(layout.device),
    )


class TemplateKernel:
    """The autotuner's winner for one template step."""

    def __init__(self, name: str, choice: Any, label: str, summary: str, source: str) -> None:
        self.name = name
        self.choice = choice
        self.label = label
        self.summary = summary
        self.source = source

    def __call__(self, *inputs: Any, out: Any) -> None:
        self.choice.run(*inputs, out=out)


def operand_spec(op: Any, buffers: dict[str, Buffer]) -> plugin.TensorSpec:
    base = buffers[op.buffer]
    return plugin.TensorSpec(op.shape, op.stride, str(base.dtype).removeprefix("torch."),
                             str(base.device))  # fmt: skip


def select_template(step: TemplateStep, buffers: dict[str, Buffer], name: str) -> TemplateKernel:
    """Choose the kernel for ``step`` (benchmarking unless cached or mode ``off``)."""
    from tilefuse_autotune import select

    data = step.node.buffer.data
    out = step.output.buffer
    specs = [_spec(b.layout) for b in data.inputs]
    steps: tuple[plugin.EpilogueStep, ...] = ()
    operands: tuple[plugin.TensorSpec, ...] = ()
    if step.epilogue is not None:
        steps = step.epilogue.steps
        operands = tuple(operand_spec(o, buffers) for o in step.epilogue.operands)
    epilogue = plugin.Epilogue(steps, operands, str(out.dtype).removeprefix("torch."))
    # Compile-time tracing may have a fake-tensor mode active; candidates need real memory.
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        selection = select(data.op, None, (*specs, *operands), _spec(out.layout), epilogue)
        selection.choice.compile()
    log.info("tilefuse: %s", selection.summary)
    source = getattr(selection.choice, "source", "") or f"# {selection.label}\n"
    return TemplateKernel(name, selection.choice, selection.label, selection.summary, source)
