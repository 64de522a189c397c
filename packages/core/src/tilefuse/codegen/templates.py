"""GEMM template steps: the autotune selector picks the kernel, or eager torch runs it.

``accepts_epilogue`` is the scheduler's one question about an epilogue (the selector's
``accepts``, asked once per candidate epilogue); ``select_template`` then picks the kernel.

Core reaches the autotuner only through the ``tilefuse.autotune.selector`` entry point
(``plugin.TemplateSelector``), never by importing it. ``select_template`` returns a
``TemplateKernel`` the wrapper calls as ``kernel(a, b, *operands, out=buf)``: the
selector's pick, benchmarked with the epilogue fused (so the fused kernel is measured,
not assumed), or, when no selector is installed or no backend on the device declares
``template:gemm``, ``plugin.ExternChoice`` (an eager torch call, reported as an extern).
A step of symbolic sizes gets ``symbolic_template``: the pick is made per size bucket
when a call reaches it (``size_buckets``).
"""

from __future__ import annotations

import logging
from typing import Any

from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import config, plugin
from ..backend_selection import candidate_backends, template_selector
from ..errors import PluginError
from ..ir.symbolic import free_size_symbols
from ..scheduler import TemplateStep
from .size_buckets import BucketedChoice

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
        # Symbols whose values each call passes as ``sizes=`` (symbolic-size steps only).
        self.size_args: tuple[str, ...] = ()

    def __call__(self, *inputs: Any, out: Any, **sizes: Any) -> None:
        self.choice.run(*inputs, out=out, **sizes)

    def direct_op(self, b: Any, out: Any) -> Any:
        """The torch function the wrapper may call in place of this kernel
        (``op(*inputs, out=out)``, one Python call less per GEMM: host time), or ``None``.
        Only an ``ExternChoice`` that would call it unchanged has one
        (``ExternChoice.direct_op``); ``b``, ``out``: the last operand's and the result's
        ``Layout``."""
        direct = getattr(self.choice, "direct_op", None)
        return direct(b, out) if direct is not None else None


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


def accepts_epilogue(
    op: str,
    inputs: tuple[plugin.TensorSpec, ...],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
) -> plugin.Verdict:
    """Whether the template ``op`` may take ``epilogue`` (the scheduler's
    ``AcceptsEpilogue``): the installed selector's ``accepts``, which says yes when one
    of its providers offers a kernel with the epilogue fused. Without a selector, or
    with no backend declaring ``template:gemm`` on the device, the GEMM runs eagerly, so
    nothing is fused into it. A selector whose answer raises or is not a ``Verdict`` is
    logged and counted as a refusal naming it (the epilogue then runs as its own kernel);
    under strict mode that raises ``PluginError`` instead."""
    why = why_no_selector(layout.device.split(":", 1)[0])
    if why is not None:
        return plugin.Verdict.no(why)
    selector = template_selector()
    name = getattr(selector, "name", repr(selector))
    try:
        verdict = selector.accepts(op, inputs, layout, epilogue)
    except Exception as exc:  # a plugin's bug must not fail the compile
        problem = f"template selector {name!r}: accepts raised {type(exc).__name__}: {exc}"
    else:
        if isinstance(verdict, plugin.Verdict):
            return verdict
        problem = f"template selector {name!r}: accepts answered {verdict!r}, not a Verdict"
    if config.strict():
        raise PluginError(problem + "; fix or uninstall the selector's distribution")
    log.warning("tilefuse: %s", problem)
    return plugin.Verdict.no(problem)


def symbolic_template(step: TemplateStep, name: str) -> TemplateKernel:
    """The kernel of a template step whose sizes are symbolic: the selector's pick per
    size bucket, made when a call first reaches the bucket (``size_buckets``). The
    wrapper passes the values of ``size_args`` as ``sizes=``. Without a selector, eager
    torch (no epilogue was fused then: ``accepts_epilogue`` said no)."""
    data = step.node.buffer.data
    layouts = [b.layout for b in data.inputs] + [step.output_layout]
    exprs = [e for lay in layouts for e in (*lay.size, *lay.stride, lay.offset)]
    for op in step.epilogue.operands if step.epilogue is not None else ():
        exprs += [*op.shape, *op.stride]
    symbols = tuple(sorted(free_size_symbols(exprs), key=str))
    if not symbols:
        return select_template(step, name)
    why = why_no_selector(step.device.type)
    if why is not None:  # eager torch, then the epilogue's reference meaning, if any
        steps = step.epilogue.steps if step.epilogue is not None else ()
        epilogue = plugin.Epilogue(steps, (), plugin.dtype_name(step.output_layout.dtype))
        return _extern_kernel(step.op, epilogue, name, why)
    choice = BucketedChoice(step, symbols, exprs)
    label = f"bucketed/{step.op}"
    summary = f"{step.op}: chosen per size bucket of {', '.join(map(str, symbols))} at run time"
    kernel = TemplateKernel(name, choice, label, summary, f"# {label}\n")
    kernel.size_args = tuple(str(s) for s in symbols)
    return kernel


def select_template(step: TemplateStep, name: str) -> TemplateKernel:
    """Choose the kernel for ``step`` (benchmarking unless cached or mode ``off``)."""
    op, inputs, layout, epilogue = step.request()
    why = why_no_selector(step.device.type)
    if why is not None:
        return _extern_kernel(op, epilogue, name, why)
    selector = template_selector()
    # Compile-time tracing may have a fake-tensor mode active; candidates need real memory.
    with unset_fake_temporarily():
        selection = selector.select(op, inputs, layout, epilogue)
        selection.choice.compile()
    log.info("tilefuse: %s", selection.summary)
    source = getattr(selection.choice, "source", "") or f"# {selection.label}\n"
    return TemplateKernel(name, selection.choice, selection.label, selection.summary, source)


def _extern_kernel(op: str, epilogue: plugin.Epilogue, name: str, why: str) -> TemplateKernel:
    """Eager torch for the step (``plugin.ExternChoice``), because ``why``."""
    label = f"extern/torch.{op}"
    choice = plugin.ExternChoice(op, epilogue)
    return TemplateKernel(name, choice, label, f"{op}: {why}", f"# {label}\n", why)
