"""GEMM template steps: the autotune selector picks the kernel, or eager torch runs it.

Core reaches the autotuner only through the ``tilefuse.autotune.selector`` entry point
(``plugin.TemplateSelector``), never by importing it. ``select_template`` returns a
``TemplateKernel`` the wrapper calls as ``kernel(a, b, *operands, out=buf)``: the
selector's pick, benchmarked with the epilogue fused (so the fused kernel is measured,
not assumed), or, when no selector is installed or no backend on the device declares
``template:gemm``, ``plugin.ExternChoice`` (an eager torch call, reported as an extern).
"""

from __future__ import annotations

import logging
from typing import Any

from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import plugin
from ..backend_selection import candidate_backends, template_selector
from ..scheduler import TemplateStep

log = logging.getLogger("tilefuse")


class TemplateKernel:
    """The kernel chosen for one template step; ``extern_reason`` is set when it is the
    eager fallback (no selector took the step), and says why."""

    def __init__(
        self,
        name: str,
        choice: Any,
        label: str,
        summary: str,
        source: str,
        extern_reason: str | None = None,
    ) -> None:
        self.name = name
        self.choice = choice
        self.label = label
        self.summary = summary
        self.source = source
        self.extern_reason = extern_reason

    def __call__(self, *inputs: Any, out: Any) -> None:
        self.choice.run(*inputs, out=out)


def why_no_selector(device_type: str) -> str | None:
    """Why no selector takes GEMM templates on ``device_type``, or ``None`` when one does.

    Raises ``PluginConflictError`` when several selectors are installed.
    """
    if template_selector() is None:
        return "no autotune selector is installed (pip install tilefuse-autotune)"
    owners = [b for b in candidate_backends(device_type)
              if plugin.CAP_TEMPLATE_GEMM in b.info.capabilities]  # fmt: skip
    if not owners:
        return f"no backend owns {plugin.CAP_TEMPLATE_GEMM} on {device_type}"
    return None


def select_template(step: TemplateStep, name: str) -> TemplateKernel:
    """Choose the kernel for ``step`` (benchmarking unless cached or mode ``off``)."""
    op, inputs, layout, epilogue = step.request()
    why = why_no_selector(step.device.type)
    if why is not None:
        label = f"extern/torch.{op}"
        choice = plugin.ExternChoice(op, epilogue)
        return TemplateKernel(name, choice, label, f"{op}: {why}", f"# {label}\n", why)
    selector = template_selector()
    # Compile-time tracing may have a fake-tensor mode active; candidates need real memory.
    with unset_fake_temporarily():
        selection = selector.select(op, inputs, layout, epilogue)
        selection.choice.compile()
    log.info("tilefuse: %s", selection.summary)
    source = getattr(selection.choice, "source", "") or f"# {selection.label}\n"
    return TemplateKernel(name, selection.choice, selection.label, selection.summary, source)
