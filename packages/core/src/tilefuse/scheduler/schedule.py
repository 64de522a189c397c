"""From a lowered graph to an ordered list of steps with a memory plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir.graph import LoweredGraph
from ..ir.nodes import Buffer, Extern, View
from ..plugin import Verdict
from .fusion import AcceptsEpilogue, ExternStep, Refusal, Step, TemplateStep, fuse, no_epilogues
from .group import FusedGroup
from .nodes import SchedNode, make_node
from .tiling import choose_tiling


@dataclass
class Schedule:
    """Steps in launch order, and what memory planning decided."""

    graph: LoweredGraph
    steps: list[Step]
    refusals: list[Refusal]
    removed: list[str] = field(default_factory=list)  # dead buffers
    fused_away: list[str] = field(default_factory=list)  # never allocated
    last_use: dict[str, int] = field(default_factory=dict)  # buffer -> step index
    # buffers an extern's returned result may view: never freed, never reused
    pinned: set[str] = field(default_factory=set)

    def kernels(self) -> list[FusedGroup]:
        return [s for s in self.steps if isinstance(s, FusedGroup)]


def _eliminate_dead(
    nodes: list[SchedNode], keep: set[str], parent_of: dict[str, str]
) -> tuple[list[SchedNode], list[str]]:
    live = set(keep)
    out: list[SchedNode] = []
    removed: list[str] = []
    for node in reversed(nodes):
        if node.name in live:
            out.append(node)
            live |= {parent_of.get(r, r) for r in node.read_names}
        else:
            removed.append(node.name)
    return list(reversed(out)), removed


def _runs_for_effect(buf: Buffer) -> bool:
    return isinstance(buf.data, Extern) and buf.data.returns_nothing()


def returned_buffers(graph: LoweredGraph) -> set[str]:
    """Names of the buffers the graph returns; a returned ``View`` counts as its base,
    which must then be stored and kept alive."""
    names = set()
    for out in graph.outputs:
        if isinstance(out, Buffer):
            names.add(out.data.base.name if isinstance(out.data, View) else out.name)
    return names


def schedule_graph(
    graph: LoweredGraph,
    can_fuse: Callable[[str, FusedGroup, SchedNode], Verdict],
    policy=None,
    accepts_epilogue: AcceptsEpilogue = no_epilogues,
) -> Schedule:
    """Build dependencies, drop dead nodes, fuse, tile, and plan memory.

    ``can_fuse`` answers for kernel fusions (the owning backend's ``can_fuse_*``);
    ``accepts_epilogue`` for GEMM epilogues (the template selector's ``accepts``; by
    default no epilogue is fused); ``policy`` may veto or rank fusions.
    """
    parent_of: dict[str, str] = {}
    for b in graph.buffers:
        if b.output_of is not None:
            parent_of[b.name] = b.output_of[0].name
    outputs = returned_buffers(graph)
    nodes = [
        make_node(b) for b in graph.buffers if b.data is not None and not isinstance(b.data, View)
    ]
    # Outputs, and the steps run for their effect alone (checks), are what stays live.
    effects = {n.name for n in nodes if _runs_for_effect(n.buffer)}
    keep = {parent_of.get(o, o) for o in outputs} | effects
    nodes, removed = _eliminate_dead(nodes, keep, parent_of)
    by_name = {n.name: n for n in nodes}
    producer_of = {name: by_name[name] for name in by_name}
    for child, parent in parent_of.items():
        if parent in by_name:
            producer_of[child] = by_name[parent]
    lookup = graph.buffers_by_name()
    steps, refusals = fuse(
        nodes,
        producer_of,
        can_fuse,
        policy,
        outputs,
        lookup,
        accepts_epilogue,
        getattr(graph, "size_hints", None),
    )
    schedule = Schedule(graph, steps, refusals, removed)
    _plan_memory(schedule, outputs, parent_of)
    return schedule


def _plan_memory(schedule: Schedule, outputs: set[str], parent_of: dict[str, str]) -> None:
    """Decide which group outputs are stored, and each buffer's last use."""
    read_by_step: list[set[str]] = []
    for step in schedule.steps:
        if isinstance(step, FusedGroup):
            reads = set()
            for n in step.nodes:
                reads |= n.read_names
            read_by_step.append(reads - set(step.names))
        elif isinstance(step, TemplateStep):
            reads = set(step.node.read_names)
            if step.epilogue is not None:
                reads |= step.epilogue.node.read_names - {step.node.name}
            read_by_step.append(reads)
        else:
            assert isinstance(step, ExternStep)
            read_by_step.append(set(step.node.read_names))
    for step in schedule.steps:
        if isinstance(step, TemplateStep) and step.epilogue is not None:
            schedule.fused_away.append(step.node.name)
    for i, step in enumerate(schedule.steps):
        if not isinstance(step, FusedGroup):
            continue
        memory_reads = read_by_step[i]
        tiled = choose_tiling(step, memory_reads)
        if tiled is not step:
            schedule.steps[i] = tiled
            step = tiled
        needed = set(outputs)
        for j, reads in enumerate(read_by_step):
            if j != i:
                needed |= reads
        step.stores = [n for n in step.names if n in needed]
        schedule.fused_away += [n for n in step.names if n not in needed]
    for i, reads in enumerate(read_by_step):
        for name in reads:
            schedule.last_use[parent_of.get(name, name)] = i
            schedule.last_use[name] = i
    _keep_viewed_inputs(schedule, read_by_step, outputs, parent_of)


def _keep_viewed_inputs(
    schedule: Schedule, read_by_step: list[set[str]], outputs: set[str], parent_of: dict[str, str]
) -> None:
    """An extern whose result may view its inputs (``Extern.may_alias_inputs``) keeps them
    alive as long as that result: freed or handed to another buffer earlier, the memory
    under the view would change. Walked backwards, so chains of such externs carry it."""
    last_use = schedule.last_use
    children: dict[str, list[str]] = {}
    for child, parent in parent_of.items():
        children.setdefault(parent, []).append(child)
    for i in reversed(range(len(schedule.steps))):
        step = schedule.steps[i]
        if not isinstance(step, ExternStep) or not step.node.buffer.data.may_alias_inputs():
            continue
        results = [step.node.name, *children.get(step.node.name, [])]
        returned = any(r in outputs or r in schedule.pinned for r in results)
        until = max([i, *(last_use.get(r, i) for r in results)])
        for name in read_by_step[i]:
            for held in {name, parent_of.get(name, name)}:
                if returned:
                    schedule.pinned.add(held)
                last_use[held] = max(last_use.get(held, i), until)
