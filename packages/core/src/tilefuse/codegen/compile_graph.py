"""Compile one aten graph: lower, schedule, generate kernels and the wrapper.

``compile_graph`` returns a ``CompiledGraph`` whose ``run(args)`` executes the
graph. Everything it decided is kept in ``CompiledGraph.report`` (kernels and
their nodes, refused fusions, externs) for ``tilefuse explain`` and written to
``TILEFUSE_DEBUG_DIR`` when that is set.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import config, counters, plugin
from ..backend_selection import active_policy, load_owner, loaded_backends, plugin_versions
from ..errors import CompileError
from ..frontend import lowerings  # noqa: F401  (registers every lowering)
from ..frontend.lowering import GraphLowering
from ..scheduler import ExternStep, FusedGroup, Schedule, TemplateStep, schedule_graph
from ..scheduler.kernel_specs import fusion_query, kernel_spec
from .kernel_cache import atomic_write
from .templates import select_template, why_no_selector
from .wrapper import write_wrapper

log = logging.getLogger("tilefuse")
_graph_ids = itertools.count(1)


@dataclass
class KernelReport:
    name: str
    backend: str
    kind: str
    nodes: list[str]
    stores: list[str]
    origins: list[str]
    source: str


@dataclass
class GraphReport:
    graph_id: int
    kernels: list[KernelReport] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    externs: dict[str, str] = field(default_factory=dict)
    fused_away: list[str] = field(default_factory=list)
    autotune: list[str] = field(default_factory=list)
    wrapper: str = ""

    def format(self) -> str:
        out = [f"graph {self.graph_id}: {len(self.kernels)} kernel(s), "
               f"{len(self.externs)} extern op(s)"]  # fmt: skip
        for k in self.kernels:
            out.append(f"  kernel {k.name} [{k.backend}, {k.kind}]: fuses {', '.join(k.nodes)}")
            out.append(f"    from aten nodes: {', '.join(k.origins)}")
            out.append(f"    writes: {', '.join(k.stores) or '(nothing)'}")
        if self.fused_away:
            out.append(f"  never allocated (fused away): {', '.join(self.fused_away)}")
        if self.refusals:
            out.append("  fusions refused:")
            out.extend(f"    {r}" for r in self.refusals)
        if self.autotune:
            out.append("  autotuning:")
            out.extend(f"    {line}" for line in self.autotune)
        if self.externs:
            out.append("  externs (eager calls):")
            out.extend(f"    {name}: {why}" for name, why in sorted(self.externs.items()))
        return "\n".join(out)


_reports: list[GraphReport] = []


def recent_reports() -> list[GraphReport]:
    """Reports of the graphs compiled in this process, oldest first."""
    return list(_reports)


class CompiledGraph:
    def __init__(self, call: Any, report: GraphReport) -> None:
        self.call = call
        self.report = report

    def __call__(self, args: list[Any]) -> Any:
        return self.call(args)


def capability_of(*parts: Any) -> str:
    """The capability a kernel made of ``parts`` (fused groups or scheduler nodes) needs:
    ``CAP_REDUCTION`` when any of them reduces, else ``CAP_POINTWISE``."""
    for part in parts:
        if getattr(part, "reduction", False) is True or getattr(part, "kind", None) == "reduction":
            return plugin.CAP_REDUCTION
    return plugin.CAP_POINTWISE


class _Schedulings:
    """One scheduling per device and backend, created on first use; each kernel goes to
    the owner of the capability it needs (``backend_selection``)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.instances: dict[tuple[str, str], tuple[str, Any]] = {}
        self.owners: dict[tuple[str, str], tuple[str, Any]] = {}
        self.templates: dict[str, list[tuple[str, Any]]] = {}

    def _instance(self, device: torch.device, backend: Any, factory: Any) -> tuple[str, Any]:
        key = (str(device), backend.info.name)
        if key not in self.instances:
            context = plugin.CompileContext(
                device=str(device),
                policy=self.policy,
                debug_dir=str(config.debug_dir()) if config.debug_dir() else None,
                plugin_versions=plugin_versions(backend, self.policy),
            )
            self.instances[key] = (backend.info.name, factory(context))
        return self.instances[key]

    def for_device(
        self, device: torch.device, capability: str = plugin.CAP_POINTWISE
    ) -> tuple[str, Any]:
        """``(backend name, scheduling)`` of the owner of ``capability`` on ``device``."""
        key = (str(device), capability)
        if key not in self.owners:
            backend, factory = load_owner(device.type, capability)
            self.owners[key] = self._instance(device, backend, factory)
        return self.owners[key]

    def template_owners(self, device: torch.device) -> list[tuple[str, Any]]:
        key = str(device)
        if key not in self.templates:
            self.templates[key] = [
                self._instance(device, backend, factory)
                for backend, factory in loaded_backends(device.type, plugin.CAP_TEMPLATE_GEMM)
            ]
        return self.templates[key]

    def can_fuse(self, kind: str, group: Any, node: Any) -> plugin.Verdict:
        if isinstance(group, TemplateStep):
            # Fused when any template backend can render the epilogue; the autotuner then
            # picks among the providers that offer a kernel for it (extern always can).
            # Without a selector the GEMM runs eagerly, so nothing is fused into it.
            why = why_no_selector(group.device.type)
            if why is not None:
                return plugin.Verdict.no(why)
            reasons = []
            for name, scheduling in self.template_owners(group.device):
                verdict = scheduling.can_fuse_vertical(group, node)
                if verdict.ok:
                    return verdict
                reasons.append(f"{name}: {verdict.reason}")
            return plugin.Verdict.no("; ".join(reasons) or "no template backend")
        _, scheduling = self.for_device(group.device, capability_of(group, node))
        first, second = fusion_query(group), fusion_query(node)
        if kind == "vertical":
            return scheduling.can_fuse_vertical(first, second)
        return scheduling.can_fuse_horizontal(first, second)


def compile_graph(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> CompiledGraph:
    """Compile an aten-level graph for concrete ``example_inputs``.

    Raises ``NoBackendError`` when a device has no backend, ``PluginError`` when
    a requested plugin is missing, and lets other errors propagate to the caller
    (which falls back to eager).
    """
    graph_id = next(_graph_ids)
    graph = GraphLowering(gm, example_inputs).run()
    buffers = {b.name: b for b in graph.buffers}
    buffers.update({b.name: b for b in graph.inputs if b is not None})
    buffers.update({name: graph.buffer(name) for name in graph.constants})
    policy = active_policy()
    schedulings = _Schedulings(policy)
    schedule = schedule_graph(graph, schedulings.can_fuse, policy)
    report = GraphReport(
        graph_id, externs=dict(graph.externs), fused_away=list(schedule.fused_away)
    )
    report.refusals = [str(r) for r in schedule.refusals]
    kernels: dict[int, Any] = {}
    template_externs = 0
    for i, step in enumerate(schedule.steps):
        if isinstance(step, TemplateStep):
            kernel = select_template(step, f"tf_gemm_{i}")
            kernels[i] = kernel
            if kernel.extern_reason is not None:  # no selector took it: an eager call
                template_externs += 1
                report.externs.setdefault(step.node.buffer.data.op, kernel.extern_reason)
                continue
            nodes = step.names
            report.kernels.append(
                KernelReport(
                    kernel.name,
                    kernel.label,
                    f"template:{step.node.buffer.data.op}",
                    nodes,
                    [step.output.name],
                    sorted({o for n in nodes for o in buffers[n].origins}),
                    kernel.source,
                )  # fmt: skip
            )
            report.autotune.append(kernel.summary)
            continue
        if not isinstance(step, FusedGroup):
            continue
        backend_name, scheduling = schedulings.for_device(step.device, capability_of(step))
        name = f"tf_{step.kind().replace('-', '_')}_{i}"  # unique: i is the step's index
        kernel = scheduling.codegen(kernel_spec(step, buffers, name))
        kernels[i] = kernel
        origins = sorted({o for n in step.nodes for o in n.buffer.origins})
        report.kernels.append(
            KernelReport(
                kernel.name,
                backend_name,
                step.kind(),
                step.names,
                list(step.stores),
                origins,
                kernel.source,
            )  # fmt: skip
        )
    wrapper = write_wrapper(schedule, kernels)
    report.wrapper = wrapper.source
    _write_debug(graph_id, gm, schedule, report)
    build_kernels(list(kernels.values()), origins_of=_origins_by_kernel(report))
    _reports.append(report)
    del _reports[:-64]
    counters.bump("kernels_compiled", len(report.kernels))
    externs = sum(isinstance(s, ExternStep) for s in schedule.steps) + template_externs
    counters.bump("externs", externs)
    templates = sum(isinstance(s, TemplateStep) for s in schedule.steps) - template_externs
    counters.bump("templates", templates)
    return CompiledGraph(wrapper.build(), report)


def _origins_by_kernel(report: GraphReport) -> dict[str, list[str]]:
    return {k.name: k.origins for k in report.kernels}


def build_kernels(kernels: Sequence[Any], origins_of: dict[str, list[str]]) -> None:
    """Build every kernel that has a ``build()`` now, in a thread pool sized to the machine.

    Raises ``CompileError`` naming the first failing kernel, the aten ops it came from and
    the error, so that the caller runs the graph eagerly (or raises under strict mode).
    """
    buildable = [k for k in kernels if callable(getattr(k, "build", None))]
    if not buildable:
        return
    workers = max(1, min(len(buildable), os.cpu_count() or 1, 16))
    # The graph compiles under AOTAutograd's fake-tensor mode; a build may allocate
    # real (tiny) tensors to specialize on, so it runs with that mode switched off.
    with unset_fake_temporarily():
        if workers == 1:
            results = [_try_build(k) for k in buildable]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="tilefuse-build") as pool:
                results = list(pool.map(_try_build, buildable))
    for kernel, error in zip(buildable, results):
        if error is not None:
            ops = ", ".join(origins_of.get(kernel.name, [])) or "unknown ops"
            raise CompileError(
                f"kernel {kernel.name} (from aten {ops}) failed to build: "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from error


def _try_build(kernel: Any) -> BaseException | None:
    try:
        kernel.build()
    except Exception as exc:  # reported by the caller with the kernel's origins
        return exc
    return None


def _first_line(error: BaseException) -> str:
    """The error's first line, and its last when they differ: a Triton compilation
    error starts with a source position and ends with the cause."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def _write_debug(
    graph_id: int, gm: torch.fx.GraphModule, schedule: Schedule, report: GraphReport
) -> None:
    root = config.debug_dir()
    if root is None:
        return
    out = Path(root) / f"graph_{graph_id:03d}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "aten_graph.txt", gm.print_readable(print_output=False))
    ir_lines = [repr(b) + f"  origins={b.origins}" for b in schedule.graph.buffers]
    atomic_write(out / "ir.txt", "\n".join(ir_lines) + "\n")
    steps = []
    for i, step in enumerate(schedule.steps):
        if isinstance(step, ExternStep):
            steps.append(f"{i}: extern {step.node.name} ({step.node.buffer.data.op})")
        elif isinstance(step, TemplateStep):
            ep = step.epilogue
            steps.append(f"{i}: template {step.node.name} epilogue="
                         f"{[s.kind for s in ep.steps] if ep else None}")  # fmt: skip
        else:
            steps.append(f"{i}: {step.describe()} stores={step.stores}")
    atomic_write(out / "schedule.txt", "\n".join(steps) + "\n\n" + report.format() + "\n")
    for k in report.kernels:
        atomic_write(out / f"{k.name}.py", k.source)
    atomic_write(out / "wrapper.py", report.wrapper)
