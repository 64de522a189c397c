"""The driver: one aten graph through every stage, in order, and the report of it.

``compile_graph(gm, example_inputs)`` runs

1. the frontend (``GraphLowering``: FX -> ``ir.LoweredGraph``),
2. the scheduler (``schedule_graph``: fusion, ordering, memory plan),
3. codegen for each step (fused groups to their backend as ``KernelSpec``\\ s, GEMM
   templates to the autotune selector or eager torch), then the wrapper,
4. the build of every kernel, then the choice of wrapper (``codegen.cpp_build.select_wrapper``):
   the Python one, the C++ one built now (``cpp_wrapper`` on), or, by default on CUDA, the
   C++ one built in the background, with the Python one serving calls until it loads,

and returns a ``CompiledGraph`` whose ``report`` (a ``GraphReport``) says what each stage
decided. The report is also handed to the active ``report.collect_reports()`` blocks
and written to ``TILEFUSE_DEBUG_DIR`` when that is set. Stages import only earlier
ones; this module is the only place that sees them all.

With symbolic example inputs (fake tensors whose sizes are ``torch.SymInt``), the graph
is compiled once for every size (``LoweredGraph.symbolic``): kernels take sizes as
arguments, GEMM templates run as eager torch calls on each call's tensors, and the
Python wrapper binds the sizes per call (the C++ wrapper is not used). A step that cannot handle a
symbol raises ``SymbolicUnsupported``, and so does a compile that would add a shape
guard (asking torch for a symbolic size's value): the caller then specializes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch.fx

from . import counters
from .backend_selection import active_policy
from .codegen.cpp_build import select_wrapper
from .codegen.kernels import Schedulings, build_kernels, capability_of
from .codegen.templates import TemplateKernel, accepts_epilogue, select_template, symbolic_template
from .codegen.wrapper import write_wrapper
from .errors import SymbolicUnsupported
from .frontend import lowerings  # noqa: F401  (registers every lowering)
from .frontend.lowering import GraphLowering
from .ir.nodes import Buffer
from .report import GraphReport, KernelReport, publish, write_debug
from .scheduler import ExternStep, FusedGroup, TemplateStep, schedule_graph
from .scheduler.kernel_specs import kernel_spec

_graph_ids = itertools.count(1)


class CompiledGraph:
    """A compiled graph: call it with AOTAutograd's argument list; ``report`` is the
    ``GraphReport`` of how it was compiled.

    ``call`` is the whole per-call behaviour: after a graph's first call the backend calls
    ``call`` directly (one Python frame fewer), so per-call work belongs in ``call``, never
    in ``__call__``."""

    def __init__(
        self, call: Any, report: GraphReport, output_strides: list[tuple[int, ...] | None]
    ) -> None:
        self.call = call
        self.report = report
        self.output_strides = output_strides  # per output; None for a non-tensor

    def __call__(self, args: list[Any]) -> Any:
        return self.call(args)


def compile_graph(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    free_outputs: frozenset[int] = frozenset(),
    padded_outputs: bool = False,
) -> CompiledGraph:
    """Compile an aten-level graph for concrete ``example_inputs``.

    Outputs keep eager's strides except those in ``free_outputs`` and, with
    ``padded_outputs``, saved GEMM results with padded rows (see ``GraphLowering``);
    ``CompiledGraph.output_strides`` says what each one has.

    Raises ``NoBackendError`` when a device has no backend, ``PluginError`` when
    a requested plugin is missing, ``CompileError`` when a kernel fails to build, and
    lets other errors propagate to the caller (which falls back to eager).
    """
    graph_id = next(_graph_ids)
    guards_before = _guard_count(example_inputs)
    graph = GraphLowering(gm, example_inputs, free_outputs, padded_outputs).run()
    hints = graph.size_hints
    buffers = graph.buffers_by_name()
    policy = active_policy()
    schedulings = Schedulings(policy)
    schedule = schedule_graph(graph, schedulings.can_fuse, policy, accepts_epilogue)
    report = GraphReport(
        graph_id,
        refusals=[str(r) for r in schedule.refusals],
        externs=dict(graph.externs),
        fused_away=list(schedule.fused_away),
    )
    kernels: dict[int, Any] = {}
    op_of = _fx_ops(gm, schedule)
    template_externs = 0
    for i, step in enumerate(schedule.steps):
        if isinstance(step, TemplateStep):
            if graph.symbolic:
                template = symbolic_template(step, f"tf_gemm_{i}")
            else:
                template = select_template(step, f"tf_gemm_{i}")
            kernels[i] = template
            if template.extern_reason is not None:  # no selector took it: an eager call
                template_externs += 1
                report.externs.setdefault(step.op, template.extern_reason)
            else:
                report.kernels.append(_template_report(step, template, buffers))
                report.autotune.append(template.summary)
        elif isinstance(step, FusedGroup):
            backend_name, scheduling = schedulings.for_device(step.device, capability_of(step))
            name = kernel_name(step, i, op_of)
            kernel = scheduling.codegen(kernel_spec(step, buffers, name, hints))
            if graph.symbolic and not hasattr(kernel, "size_args"):
                # A backend that predates symbolic sizes may have baked a size in.
                raise SymbolicUnsupported(
                    f"backend {backend_name} rendered {name} without size_args (it does "
                    "not declare that its kernels take symbolic sizes)"
                )
            kernels[i] = kernel
            report.kernels.append(_group_report(step, kernel, backend_name))
    wrapper = write_wrapper(schedule, kernels)
    report.wrapper = wrapper.source
    if graph.symbolic:
        _check_no_new_guards(example_inputs, guards_before)
        names = ", ".join(sorted(str(s) for s in hints))
        report.specialization = f"none: compiled once for every value of {names}"
    write_debug(graph_id, gm, schedule, report)
    build_kernels(list(kernels.values()), origins_of={k.name: k.origins for k in report.kernels})
    publish(report)
    counters.bump("kernels_compiled", len(report.kernels))
    externs = sum(isinstance(s, ExternStep) for s in schedule.steps) + template_externs
    counters.bump("externs", externs)
    templates = sum(isinstance(s, TemplateStep) for s in schedule.steps) - template_externs
    counters.bump("templates", templates)
    call = select_wrapper(schedule, kernels, wrapper.build(), report)
    return CompiledGraph(call, report, [_concrete_strides(o) for o in graph.outputs])


#: The most op names a kernel's name carries.
_NAMED_OPS = 3
#: Ops that only view their input: named only where a kernel computes nothing else.
_VIEW_OPS = frozenset({
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "unsqueeze", "squeeze",
    "expand", "slice", "select", "alias", "as_strided", "getitem", "split",
    "split_with_sizes", "unbind", "unflatten", "flatten", "narrow",
})  # fmt: skip


def kernel_name(step: FusedGroup, index: int, op_of: Mapping[str, str]) -> str:
    """``tf_<kind>_<index>_<ops>``: unique within a graph (``index`` is the step's), and
    readable in a profiler, where kernels of several graphs share one table. ``<ops>`` are
    the first few distinct aten ops the kernel computes, in graph order, by their FX names
    without a numeric suffix (``sum_1`` -> ``sum``). ``op_of`` (``_fx_ops``) maps an FX
    name to its op: views are left out unless the kernel computes nothing else, and a name
    it lacks (an extern's, whose operand the kernel only writes) is left out."""
    names = [origin for node in step.nodes for origin in node.buffer.origins if origin in op_of]
    computed = [n for n in names if op_of[n] not in _VIEW_OPS]
    ops: list[str] = []
    for origin in computed or names:
        op = re.sub(r"(_\d+)+$", "", origin).strip("_")
        if re.fullmatch(r"[A-Za-z]\w*", op, re.ASCII) and op != "output" and op not in ops:
            ops.append(op)
    suffix = "".join(f"_{op}" for op in ops[:_NAMED_OPS])
    return f"tf_{step.kind().value.replace('-', '_')}_{index}{suffix}"


def _fx_ops(gm: torch.fx.GraphModule, schedule: Any) -> dict[str, str]:
    """FX node name -> its op's name (``view``, ``sum``), for the nodes kernels compute:
    the externs' and templates' own nodes are left out."""
    outside = {
        step.node.buffer.origins[0]
        for step in schedule.steps
        if isinstance(step, (ExternStep, TemplateStep)) and step.node.buffer.origins
    }
    ops = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.name not in outside:
            packet = getattr(node.target, "overloadpacket", node.target)
            ops[node.name] = getattr(packet, "__name__", str(node.target))
    return ops


def _concrete_strides(output: Any) -> tuple[int, ...] | None:
    """An output buffer's strides as integers; ``None`` for a non-buffer or symbolic ones."""
    if not isinstance(output, Buffer) or not all(s.is_Integer for s in output.layout.stride):
        return None
    return tuple(int(s) for s in output.layout.stride)


def _shape_env(example_inputs: Sequence[Any]) -> Any:
    for x in example_inputs:
        sizes = x.shape if isinstance(x, torch.Tensor) else (x,)
        for s in sizes:
            node = getattr(s, "node", None)
            if node is not None and getattr(node, "shape_env", None) is not None:
                return node.shape_env
    return None


def _guard_count(example_inputs: Sequence[Any]) -> int:
    env = _shape_env(example_inputs)
    return len(env.guards) if env is not None else 0


def _check_no_new_guards(example_inputs: Sequence[Any], before: int) -> None:
    """Raise ``SymbolicUnsupported`` when compiling asked torch for a symbolic size's
    value: the result would be valid only where the new guard holds."""
    env = _shape_env(example_inputs)
    if env is None or len(env.guards) == before:
        return
    added = "; ".join(str(g.expr) for g in env.guards[before:][:3])
    raise SymbolicUnsupported(f"compiling it specialized a size ({added})")


def _template_report(
    step: TemplateStep, kernel: TemplateKernel, buffers: dict[str, Buffer]
) -> KernelReport:
    nodes = step.names
    return KernelReport(
        kernel.name,
        kernel.label,
        f"template:{step.op}",
        nodes,
        [step.output.name],
        sorted({o for n in nodes for o in buffers[n].origins}),
        kernel.source,
    )


def _group_report(step: FusedGroup, kernel: Any, backend_name: str) -> KernelReport:
    return KernelReport(
        kernel.name,
        backend_name,
        step.kind().value,
        step.names,
        list(step.stores),
        sorted({o for n in step.nodes for o in n.buffer.origins}),
        kernel.source,
    )
