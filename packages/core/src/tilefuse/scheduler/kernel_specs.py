"""Turn scheduler groups into the public codegen contract (``tilefuse.kernel_spec``).

Backends never see a ``FusedGroup`` or a ``SchedNode``: they get a ``KernelSpec`` to
render and a ``FusionQuery`` to answer fusion questions about.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..ir.nodes import Buffer, Pointwise, Reduction
from ..kernel_spec import BufferSpec, FusionQuery, GroupKind, KernelSpec, Level, MemberSpec
from .group import FusedGroup, simplified
from .nodes import REDUCTION, SchedNode


def buffer_spec(buffer: Buffer) -> BufferSpec:
    layout = buffer.layout
    return BufferSpec(
        buffer.name, layout.dtype, tuple(layout.size), tuple(layout.stride), layout.offset,
        str(layout.device),
    )  # fmt: skip


def _member(group: FusedGroup, node: SchedNode) -> MemberSpec:
    placement = group.placements[node.name]
    mapping = placement.mapping
    idx = [mapping[v] for v in node.index_vars]
    data = node.buffer.data
    reads = tuple(
        (name, simplified(index.subs(mapping, simultaneous=True), group))
        for name, index in node.reads
    )
    store_index = simplified(placement.store_index, group)
    if node.kind == REDUCTION:
        assert isinstance(data, Reduction)
        ridx = [mapping[v] for v in node.reduction_vars]
        body = data.body
        return MemberSpec(
            node.name, Level.REDUCED, node.buffer.dtype, store_index, reads,
            compute=lambda: body(idx, ridx), reduction_type=data.reduction_type,
            src_dtype=data.src_dtype, indirect=node.has_indirect,
        )  # fmt: skip
    assert isinstance(data, Pointwise)
    pw_body = data.body
    return MemberSpec(
        node.name, Level(placement.level), node.buffer.dtype, store_index, reads,
        compute=lambda: pw_body(idx), indirect=node.has_indirect,
    )  # fmt: skip


def _kind(group: FusedGroup) -> GroupKind:
    return group.kind()


def kernel_spec(
    group: FusedGroup,
    buffers: Mapping[str, Buffer],
    name: str,
    size_hints: Mapping[Any, int] | None = None,
) -> KernelSpec:
    """The contract for rendering ``group`` as kernel ``name``; ``buffers`` maps every
    buffer name of the graph to its ``Buffer``; ``size_hints`` are the graph's size
    symbols' example values (none for static sizes)."""
    members = tuple(_member(group, n) for n in group.nodes)
    member_names = set(group.names)
    used = {r for m in members for r, _ in m.reads if r not in member_names}
    used.update(group.stores)
    specs = {b: buffer_spec(buffers[b]) for b in sorted(used)}
    return KernelSpec(
        name, _kind(group), str(group.device), group.xnumel, group.rnumel, members,
        tuple(group.stores), MappingProxyType(specs),
        size_hints=MappingProxyType(dict(size_hints or {})),
    )  # fmt: skip


def fusion_query(item: Any) -> FusionQuery:
    """A ``FusionQuery`` for a ``FusedGroup`` or a single kernel ``SchedNode``."""
    if isinstance(item, FusedGroup):
        return FusionQuery(
            tuple(item.names), _kind(item), item.xnumel, item.rnumel, str(item.device)
        )
    node: SchedNode = item
    if node.kind == REDUCTION:
        kind, rnumel = GroupKind.REDUCTION, node.rnumel
    else:
        kind, rnumel = GroupKind.POINTWISE, node.rnumel
    return FusionQuery((node.name,), kind, node.numel, rnumel, str(node.buffer.device))
