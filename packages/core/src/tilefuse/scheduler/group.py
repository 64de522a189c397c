"""A fused group: nodes placed in one iteration space ``x in [0, X) × r in [0, R)``.

Placement levels:
- ``"x"``: a pointwise node over ``X`` elements, computed once per ``x``;
- ``"xr"``: a pointwise node over ``X*R`` elements, one per ``(x, r)``;
- ``"red"``: a reduction producing one value per ``x`` from the ``r`` elements.

For a pure pointwise group ``R`` is 1, or the inner tile size of a 2D-tiled
kernel (then every node is ``"xr"``). A read of a group member is only legal
when it reads exactly the element the member computes at the same point; this
is what lets fused intermediates live in registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy

from ..ir.index import Expr, provably_equal, unflatten, unflatten_in_order
from ..ir.nodes import stride_order
from ..kernel_spec import GroupKind, _simplify
from ..kernel_spec import R as RSYM
from ..kernel_spec import X as XSYM
from .nodes import POINTWISE, REDUCTION, SchedNode


@dataclass
class Placement:
    level: str  # "x", "xr" or "red"
    mapping: dict[sympy.Symbol, Expr]
    store_index: Expr


@dataclass(eq=False)
class FusedGroup:
    """Nodes that become one kernel. ``stores`` is filled in by memory planning."""

    nodes: list[SchedNode]
    xnumel: Expr
    rnumel: Expr
    reduction: bool
    tiled: bool = False
    placements: dict[str, Placement] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def device(self) -> Any:
        return self.nodes[0].buffer.device

    def node(self, name: str) -> SchedNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def kind(self) -> GroupKind:
        if self.reduction:
            return GroupKind.REDUCTION
        return GroupKind.POINTWISE_2D if self.tiled else GroupKind.POINTWISE

    def describe(self) -> str:
        return f"{self.kind().value} x={self.xnumel} r={self.rnumel}: {', '.join(self.names)}"


def simplified(expr: Expr, group: FusedGroup) -> Expr:
    return _simplify(sympy.sympify(expr), group.xnumel, group.rnumel)


def _split_point(sizes: tuple[Expr, ...], outer: Expr) -> int | None:
    running: Expr = sympy.Integer(1)
    if outer == 1:
        return 0
    for k, s in enumerate(sizes):
        running = running * s
        if provably_equal(running, outer):
            return k + 1
    return None


def memory_order(node: SchedNode) -> tuple[int, ...]:
    """``node``'s dims from outermost to innermost in its own buffer's memory (strides
    descending; ties and size-1 dims keep their logical order). The logical order when a
    stride is symbolic."""
    ranges = node.ranges
    strides = node.buffer.layout.stride
    order = stride_order(ranges, strides) if len(strides) == len(ranges) else None
    if order is None:
        return tuple(range(len(ranges)))
    moving = iter(order)  # size-1 dims keep their places; the others take memory order
    return tuple(d if ranges[d] == 1 else next(moving) for d in range(len(ranges)))


def _x_indices(ranges: tuple[Expr, ...], order: tuple[int, ...]) -> list[Expr]:
    """Per-dimension indices (logical order) of ``X`` walked in ``order`` (outer first)."""
    return unflatten_in_order(XSYM, ranges, order)


def place(
    node: SchedNode,
    xnumel: Expr,
    rnumel: Expr,
    reduction_space: bool,
    order: tuple[int, ...] | None = None,
) -> Placement | None:
    """Where ``node`` sits in space ``(xnumel, rnumel)``, or ``None`` if it cannot.

    A node of a pure pointwise space walks ``X`` in ``order`` (its dims outer to inner;
    default logical), so that a node stored in a permuted layout (a transposed head
    split, say) writes and reads memory contiguously along ``X``."""
    ranges = node.ranges
    if node.kind == REDUCTION:
        if not reduction_space:
            return None
        if not (provably_equal(node.numel, xnumel) and provably_equal(node.rnumel, rnumel)):
            return None
        mapping = dict(zip(node.index_vars, unflatten(XSYM, ranges)))
        mapping.update(zip(node.reduction_vars, unflatten(RSYM, node.reduction_ranges)))
        return Placement("red", mapping, node.buffer.layout.index(unflatten(XSYM, ranges)))
    assert node.kind == POINTWISE
    numel = node.numel
    if rnumel != 1 and provably_equal(numel, xnumel * rnumel):
        k = _split_point(ranges, xnumel)
        if k is not None:
            xs = unflatten(XSYM, ranges[:k]) if k else []
            rs = unflatten(RSYM, ranges[k:])
            vars_ = xs + rs
            return Placement(
                "xr", dict(zip(node.index_vars, vars_)), node.buffer.layout.index(vars_)
            )
    if (reduction_space or rnumel == 1) and provably_equal(numel, xnumel):
        walk = order if order is not None and not reduction_space and rnumel == 1 else None
        vars_ = _x_indices(ranges, walk) if walk else unflatten(XSYM, ranges)
        return Placement("x", dict(zip(node.index_vars, vars_)), node.buffer.layout.index(vars_))
    return None


def check_reads(group: FusedGroup, node: SchedNode, placement: Placement) -> str | None:
    """Why ``node`` cannot read group members in registers, or ``None`` if it can."""
    for name, index in node.reads:
        target = group.placements.get(name)
        if target is None:
            continue
        if node.has_indirect and any(s.name.startswith("indirect") for s in index.free_symbols):
            return f"reads {name} through a gathered index"
        read = simplified(index.subs(placement.mapping, simultaneous=True), group)
        stored = simplified(target.store_index, group)
        if target.level == "xr" and placement.level == "x":
            return f"reads per-element {name} from a per-row context"
        if not provably_equal(read, stored):
            return f"reads {name} at {read}, not where it is computed ({stored})"
    return None


def try_build(
    nodes: list[SchedNode], xnumel: Expr, rnumel: Expr, reduction: bool, tiled: bool = False
) -> tuple[FusedGroup | None, str]:
    """Place every node in the space; the group, or ``None`` and the reason."""
    group = FusedGroup(list(nodes), xnumel, rnumel, reduction, tiled)
    # Nodes of one shape share the first one's walk, so one can read another in registers.
    orders: dict[tuple[Expr, ...], tuple[int, ...]] = {}
    for node in nodes:
        order = orders.setdefault(node.ranges, memory_order(node))
        p = place(node, xnumel, rnumel, reduction, order)
        if p is None:
            return None, (
                f"{node.name} ({node.kind}, numel {node.numel}"
                f"{', rnumel ' + str(node.rnumel) if node.kind == REDUCTION else ''}) does not "
                f"fit the iteration space x={xnumel}, r={rnumel}"
            )
        why = check_reads(group, node, p)
        if why:
            return None, f"{node.name} {why}"
        group.placements[node.name] = p
    return group, ""


def space_for(nodes: list[SchedNode]) -> tuple[Expr, Expr, bool]:
    """The iteration space a list of nodes would share: from its first reduction, if any."""
    for n in nodes:
        if n.kind == REDUCTION:
            return n.numel, n.rnumel, True
    return nodes[0].numel, sympy.Integer(1), False


def build_group(nodes: list[SchedNode]) -> tuple[FusedGroup | None, str]:
    xnumel, rnumel, reduction = space_for(nodes)
    return try_build(nodes, xnumel, rnumel, reduction)
