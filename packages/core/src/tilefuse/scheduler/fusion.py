"""Greedy fusion over nodes in program order, with every refusal recorded.

Each kernel node is offered to the groups it could join: groups holding its
producers (vertical) or sharing its inputs (horizontal), best score first
(bytes that fusion keeps out of memory); a tiny node (at most ``TINY_ELEMENTS``
outputs: a batch norm's step counter; for a reduction also at most
``TINY_REDUCTION`` elements reduced per output: the second stage of a split column
sum) is also offered, last, to earlier groups of tiny nodes of its shape, so that such
nodes share one launch.
A candidate is refused, with the reason kept for ``tilefuse explain``, when: the node
depends on a later group (order), the devices differ, the iteration spaces do not fit
(this is what keeps a reduction from being recomputed), a read would need another
thread's value, the group is full, the owning backend says no, or the active
scheduling policy vetoes it.

A pointwise node that reads a GEMM template's result may become the template's
epilogue instead: the matcher (``epilogue.match_epilogue``) describes it as a
``plugin.Epilogue``, and ``accepts_epilogue`` (the template selector's
``accepts``, passed in by the pipeline) is asked once whether a provider can fuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy

from ..ir.index import provably_equal
from ..ir.nodes import Buffer, Extern, Template
from ..ir.symbolic import hint_of
from ..plugin import Epilogue, FusionCandidate, TensorSpec, Verdict, dtype_name
from .epilogue import MatchedEpilogue, NotAnEpilogue, match_epilogue
from .group import FusedGroup, build_group
from .nodes import POINTWISE, REDUCTION, TEMPLATE, SchedNode

MAX_GROUP_NODES = 48
# Pointwise nodes this small cost a launch more than their work: independent ones of one
# size may share a kernel (ResNet-18's forward had 20 one-element kernels, one per batch
# norm's ``num_batches_tracked + 1``).
TINY_ELEMENTS = 1024
# Reductions of at most this many elements per output, into at most ``TINY_ELEMENTS``
# outputs, are tiny too: the second stages of a LayerNorm's weight and bias gradients
# (768 columns of 32 partial sums each) took a kernel each.
TINY_REDUCTION = 256


@dataclass
class Refusal:
    kind: str  # "vertical" or "horizontal"
    group: list[str]
    node: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.node} into [{', '.join(self.group)}]: {self.reason}"


@dataclass(eq=False)
class ExternStep:
    node: SchedNode

    @property
    def names(self) -> list[str]:
        return [self.node.name]

    @property
    def op(self) -> Any:
        """The eager op the extern calls."""
        data = self.node.buffer.data
        assert isinstance(data, Extern), data
        return data.op


@dataclass(eq=False)
class TemplateStep:
    """A GEMM template and, when one was fused, the pointwise epilogue it stores."""

    node: SchedNode
    epilogue: MatchedEpilogue | None = None

    @property
    def names(self) -> list[str]:
        return [self.node.name] + ([self.epilogue.node.name] if self.epilogue else [])

    @property
    def device(self) -> Any:
        return self.node.buffer.device

    @property
    def op(self) -> str:
        """The template's op (a ``plugin.GEMM_OPS`` key)."""
        data = self.node.buffer.data
        assert isinstance(data, Template), data
        return data.op

    @property
    def output(self) -> SchedNode:
        return self.epilogue.node if self.epilogue else self.node

    @property
    def output_layout(self) -> Any:
        """What the template writes: ``output``'s buffer, seen in the GEMM's shape when
        the epilogue node has another (``MatchedEpilogue.out_layout``)."""
        if self.epilogue is not None and self.epilogue.out_layout is not None:
            return self.epilogue.out_layout
        return self.output.buffer.layout

    def request(
        self, values: Mapping[sympy.Symbol, int] | None = None
    ) -> tuple[str, tuple[TensorSpec, ...], TensorSpec, Epilogue]:
        """The problem as providers see it: ``(op, input specs, output spec, epilogue)``;
        the input specs are the op's tensors followed by the epilogue's operands. Symbolic
        sizes take their ``values`` (a size hint, or one call's sizes); without them a
        symbolic size raises ``SymbolicUnsupported``."""
        data = self.node.buffer.data
        assert isinstance(data, Template), data
        out_layout = self.output_layout
        operands: tuple[TensorSpec, ...] = ()
        steps: tuple[Any, ...] = ()
        if self.epilogue is not None:
            steps = self.epilogue.steps
            operands = tuple(
                TensorSpec(_ints(o.shape, values), _ints(o.stride, values), o.dtype, o.device)
                for o in self.epilogue.operands
            )
        inputs = tuple(_spec(b.layout, values) for b in data.inputs) + operands
        epilogue = Epilogue(steps, operands, dtype_name(out_layout.dtype))
        return data.op, inputs, _spec(out_layout, values), epilogue


def _ints(exprs: Any, values: Mapping[sympy.Symbol, int] | None) -> tuple[int, ...]:
    return tuple(hint_of(e, values or {}) for e in exprs)


def _spec(layout: Any, values: Mapping[sympy.Symbol, int] | None = None) -> TensorSpec:
    return TensorSpec(
        _ints(layout.size, values),
        _ints(layout.stride, values),
        dtype_name(layout.dtype),
        str(layout.device),
    )


Step = FusedGroup | ExternStep | TemplateStep
CanFuse = Callable[[str, FusedGroup, SchedNode], Verdict]
# (op, input specs, output spec, epilogue) -> may a template with this epilogue be had?
AcceptsEpilogue = Callable[[str, tuple[TensorSpec, ...], TensorSpec, Epilogue], Verdict]


def no_epilogues(
    op: str, inputs: tuple[TensorSpec, ...], layout: TensorSpec, epilogue: Epilogue
) -> Verdict:
    """The ``AcceptsEpilogue`` of a caller that offers no template selector."""
    return Verdict.no("no template selector was asked")


def _nbytes(buf: Buffer) -> int:
    try:
        return int(buf.layout.numel) * buf.dtype.itemsize
    except TypeError:
        return 0


def fuse(
    nodes: list[SchedNode],
    producer_of: dict[str, SchedNode],
    can_fuse: CanFuse,
    policy: Any = None,
    outputs: set[str] | None = None,
    lookup: dict[str, Buffer] | None = None,
    accepts_epilogue: AcceptsEpilogue = no_epilogues,
    hints: Mapping[sympy.Symbol, int] | None = None,
) -> tuple[list[Step], list[Refusal]]:
    """Group ``nodes`` (program order) into steps; returns steps and refusals.

    ``can_fuse`` is the owning backend's answer for a kernel fusion and
    ``accepts_epilogue`` the answer for a template epilogue (see the module docstring),
    asked at the size ``hints`` where sizes are symbolic.
    """
    steps: list[Step] = []
    step_of: dict[str, int] = {}
    refusals: list[Refusal] = []
    buffers = {n.name: n.buffer for n in nodes}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for r in n.read_names:
            consumers.setdefault(r, []).append(n.name)
    outputs = outputs or set()

    for node in nodes:
        if node.kind == TEMPLATE:
            step_of[node.name] = len(steps)
            steps.append(TemplateStep(node))
            continue
        if not node.is_kernel():
            step_of[node.name] = len(steps)
            steps.append(ExternStep(node))
            continue
        if _try_epilogue(
            node, steps, step_of, producer_of, consumers, outputs, accepts_epilogue, refusals,
            lookup, hints,
        ):  # fmt: skip
            continue
        producer_steps = {step_of[producer_of[r].name] for r in node.read_names if r in producer_of}
        latest = max(producer_steps, default=-1)
        candidates = []
        for i, step in enumerate(steps):
            if not isinstance(step, FusedGroup):
                continue
            vertical = i in producer_steps
            shared = node.read_names & _group_reads(step)
            if not vertical and not shared:
                continue
            kind = "vertical" if vertical else "horizontal"
            score = sum(_nbytes(buffers[n]) for n in node.read_names if n in step.names)
            score += sum(_nbytes(producer_of[n].buffer) if n in producer_of else 0 for n in shared)
            candidates.append(FusionCandidate(kind, step, node, score))
        if _tiny(node):
            offered = {id(c.first) for c in candidates}
            for step in steps[max(latest, 0) :]:
                if _takes_tiny(step, node) and id(step) not in offered:
                    candidates.append(FusionCandidate("horizontal", step, node, 0))
        candidates.sort(key=lambda c: -c.score)
        if policy is not None:
            kept = policy.rank_fusions(list(candidates))
            for c in candidates:
                if c not in kept:
                    refusals.append(
                        Refusal(
                            c.kind,
                            c.first.names,
                            node.name,
                            f"vetoed by scheduling policy {policy.name!r}",
                        )
                    )
            candidates = kept
        placed = False
        for cand in candidates:
            group: FusedGroup = cand.first
            index = steps.index(group)
            reason = _refuse_reason(group, index, latest, node, cand.kind, can_fuse)
            if reason is None:
                new_group, why = build_group(group.nodes + [node])
                if new_group is None:
                    reason = why
                else:
                    steps[index] = new_group
                    step_of[node.name] = index
                    placed = True
                    break
            refusals.append(Refusal(cand.kind, group.names, node.name, reason))
        if not placed:
            group, why = build_group([node])
            if group is None:
                raise AssertionError(f"a node must fit its own group: {why}")
            step_of[node.name] = len(steps)
            steps.append(group)
    return steps, refusals


def _try_epilogue(
    node, steps, step_of, producer_of, consumers, outputs, accepts_epilogue, refusals, lookup,
    hints,
) -> bool:  # fmt: skip
    """Attach ``node`` to the template it reads as its epilogue, when it can be one: the
    matcher describes it, and ``accepts_epilogue`` is asked once about that description."""
    for name in node.read_names:
        producer = producer_of.get(name)
        if producer is None or producer.kind != TEMPLATE:
            continue
        step = steps[step_of[producer.name]]
        assert isinstance(step, TemplateStep)
        group = [producer.name]
        if step.epilogue is not None:
            reason = "the GEMM already has an epilogue"
        elif name in outputs or consumers.get(name, []) != [node.name]:
            reason = f"the GEMM result {name} is also used elsewhere"
        elif any(step_of[producer_of[r].name] > step_of[producer.name]
                 for r in node.read_names if r in producer_of and r != name):  # fmt: skip
            reason = "an epilogue operand is computed after the GEMM"
        else:
            try:
                step.epilogue = match_epilogue(producer, node, lookup)
            except NotAnEpilogue as exc:
                reason = str(exc)
            else:
                # The one question: does a provider offer this template with this epilogue?
                verdict = accepts_epilogue(*step.request(hints))
                if verdict.ok:
                    step_of[node.name] = step_of[producer.name]
                    return True
                step.epilogue = None
                reason = f"no template provider accepts it: {verdict.reason}"
        refusals.append(Refusal("epilogue", group, node.name, reason))
    return False


def _tiny(node: SchedNode) -> bool:
    """A node of at most ``TINY_ELEMENTS`` outputs (a known number): any pointwise node,
    or a reduction of at most ``TINY_REDUCTION`` elements per output."""
    numel = sympy.sympify(node.numel)
    if not (numel.is_Integer and int(numel) <= TINY_ELEMENTS):
        return False
    if node.kind == POINTWISE:
        return True
    rnumel = sympy.sympify(node.rnumel)
    return node.kind == REDUCTION and rnumel.is_Integer and int(rnumel) <= TINY_REDUCTION


def _takes_tiny(step: Step, node: SchedNode) -> bool:
    """Whether ``step`` is a group of tiny nodes of ``node``'s ranges and reduction size
    with room for one more (a full group is not offered, so no refusal is recorded per
    node)."""
    if not isinstance(step, FusedGroup) or len(step.nodes) >= MAX_GROUP_NODES:
        return False
    if not provably_equal(step.rnumel, node.rnumel):
        return False
    return all(_tiny(n) and n.ranges == node.ranges for n in step.nodes)


def _group_reads(group: FusedGroup) -> set[str]:
    out: set[str] = set()
    for n in group.nodes:
        out |= n.read_names
    return out - set(group.names)


def _refuse_reason(group: FusedGroup, index: int, latest: int, node: SchedNode, kind: str,
                   can_fuse: CanFuse) -> str | None:  # fmt: skip
    if latest > index:
        return "it depends on a kernel that runs after this group"
    if group.device != node.buffer.device:
        return f"different devices ({group.device} vs {node.buffer.device})"
    if len(group.nodes) >= MAX_GROUP_NODES:
        return f"group already holds {MAX_GROUP_NODES} nodes"
    verdict = can_fuse(kind, group, node)
    if not verdict.ok:
        return f"backend refused: {verdict.reason}"
    return None
