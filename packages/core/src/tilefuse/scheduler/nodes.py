"""Scheduler nodes: one per computed buffer, with the reads its body makes.

A node's body is traced once with canonical symbols (``i0..`` over its ranges,
``r0..`` over its reduction ranges) to record ``(buffer, index)`` reads. A
``FusedGroup`` later places each node in the group's iteration space, mapping
those canonical symbols to expressions over the group's ``x`` and ``r`` symbols.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import sympy

from ..ir.index import Expr, FloorDiv, ModularIndexing, simplify_index
from ..ir.nodes import (
    Buffer,
    Extern,
    Pointwise,
    Reduction,
    Template,
    View,
    index_symbols,
    product,
)
from ..ir.ops import trace_reads


class NodeKind(str, enum.Enum):
    """What computes a scheduler node's buffer."""

    POINTWISE = "pointwise"
    REDUCTION = "reduction"
    EXTERN = "extern"  # an eager torch call
    TEMPLATE = "template"  # a GEMM-family op the autotuner picks a kernel for


POINTWISE = NodeKind.POINTWISE
REDUCTION = NodeKind.REDUCTION
EXTERN = NodeKind.EXTERN
TEMPLATE = NodeKind.TEMPLATE


@dataclass(eq=False)
class SchedNode:
    """A buffer to compute, with its dependencies."""

    buffer: Buffer
    kind: NodeKind
    reads: list[tuple[str, Expr]] = field(default_factory=list)
    read_names: set[str] = field(default_factory=set)
    index_vars: list[sympy.Symbol] = field(default_factory=list)
    reduction_vars: list[sympy.Symbol] = field(default_factory=list)
    has_indirect: bool = False

    @property
    def name(self) -> str:
        return self.buffer.name

    @property
    def names(self) -> list[str]:
        return [self.buffer.name]

    @property
    def ranges(self) -> tuple[Expr, ...]:
        data = self.buffer.data
        assert isinstance(data, (Pointwise, Reduction))
        return data.ranges

    @property
    def reduction_ranges(self) -> tuple[Expr, ...]:
        data = self.buffer.data
        return data.reduction_ranges if isinstance(data, Reduction) else ()

    @property
    def numel(self) -> Expr:
        return product(self.ranges)

    @property
    def rnumel(self) -> Expr:
        return product(self.reduction_ranges)

    def is_kernel(self) -> bool:
        return self.kind in (POINTWISE, REDUCTION)

    def __repr__(self) -> str:
        return f"SchedNode({self.name}, {self.kind})"


def make_node(buffer: Buffer) -> SchedNode:
    data: Any = buffer.data
    if isinstance(data, Pointwise):
        node = SchedNode(buffer, POINTWISE)
        node.index_vars = index_symbols("i", len(data.ranges))
        tracer = trace_reads(data.body, node.index_vars)
    elif isinstance(data, Reduction):
        node = SchedNode(buffer, REDUCTION)
        node.index_vars = index_symbols("i", len(data.ranges))
        node.reduction_vars = index_symbols("r", len(data.reduction_ranges))
        tracer = trace_reads(data.body, node.index_vars, node.reduction_vars)
    elif isinstance(data, Extern):
        node = SchedNode(buffer, EXTERN)
        args = buffers_in(data.args) + buffers_in(data.kwargs)
        node.read_names = {a.name for a in args}
        node.read_names |= {b.data.base.name for b in args if isinstance(b.data, View)}
        return node
    elif isinstance(data, Template):
        node = SchedNode(buffer, TEMPLATE)
        node.read_names = {b.name for b in data.inputs}
        node.read_names |= {b.data.base.name for b in data.inputs if isinstance(b.data, View)}
        return node
    else:
        raise TypeError(f"cannot schedule {buffer!r}")
    node.reads = _simplified_reads(tracer.reads, node, data)
    node.read_names = {name for name, _ in tracer.reads}
    node.has_indirect = tracer.indirect_count > 0
    return node


def _simplified_reads(
    reads: list[tuple[str, Expr]], node: SchedNode, data: Pointwise | Reduction
) -> list[tuple[str, Expr]]:
    """``reads`` with each index that divides or takes a remainder simplified over the
    node's ranges: a broadcast per-channel parameter reads ``i1``, not
    ``ModularIndexing(i1, 1, C)``, so the stride checks of tiling and fusion see it."""
    ranges = dict(zip(node.index_vars, data.ranges))
    if isinstance(data, Reduction):
        ranges.update(zip(node.reduction_vars, data.reduction_ranges))
    out = []
    for name, index in reads:
        if isinstance(index, sympy.Expr) and index.has(FloorDiv, ModularIndexing):
            index = simplify_index(index, ranges)
        out.append((name, index))
    return out


def buffers_in(obj: Any) -> list[Buffer]:
    """The buffers among an extern's (nested) arguments."""
    if isinstance(obj, Buffer):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [b for o in obj for b in buffers_in(o)]
    if isinstance(obj, dict):
        return [b for o in obj.values() for b in buffers_in(o)]
    return []
