"""GEMM template steps: ask the autotuner for the fastest choice with the epilogue fused.

The winning ``Choice`` becomes a ``TemplateKernel`` the wrapper calls as
``kernel(a, b, *operands, out=buf)``. The autotuner benchmarks every candidate
with the epilogue fused, so the fused kernel is measured, not assumed.
"""

from __future__ import annotations

import logging
from typing import Any

from ..ir.nodes import Buffer
from ..scheduler import TemplateStep

log = logging.getLogger("tilefuse")


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


def select_template(step: TemplateStep, buffers: dict[str, Buffer], name: str) -> TemplateKernel:
    """Choose the kernel for ``step`` (benchmarking unless cached or mode ``off``)."""
    from tilefuse_autotune import select

    op, inputs, layout, epilogue = step.request()
    # Compile-time tracing may have a fake-tensor mode active; candidates need real memory.
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        selection = select(op, None, inputs, layout, epilogue)
        selection.choice.compile()
    log.info("tilefuse: %s", selection.summary)
    source = getattr(selection.choice, "source", "") or f"# {selection.label}\n"
    return TemplateKernel(name, selection.choice, selection.label, selection.summary, source)
