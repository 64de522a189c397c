"""The codegen contract: what a backend is given to render one fused kernel.

A ``KernelSpec`` describes a fused group in a fixed iteration space
``x in [0, xnumel) × r in [0, rnumel)`` over the public symbols ``X`` and ``R``:

- ``members`` are the values the kernel computes, in dependency order. Each sits
  at one ``Level``: ``PER_X`` (one value per ``x``), ``PER_XR`` (one per
  ``(x, r)``) or ``REDUCED`` (a ``reduction_type`` over ``r`` of the value its
  body yields, one per ``x``).
- A member's ``compute()`` runs its body under the active ops handler (install
  one with ``ops_handler``). The body calls ``ops.load(name, index)`` for every
  read, with ``index`` a flat element offset into buffer ``name`` written over
  ``X``, ``R`` and the symbols ``ops.indirect`` returned; it calls the other ops
  named in ``OP_NAMES``. A load of another member's name means "that member's
  value at this point": the backend supplies it from registers or recomputes it.
- ``stores`` are the members written to memory, each at its ``store_index``.
- ``buffers`` describes every buffer the kernel reads or writes (dtype, sizes,
  strides, offset, device).

Sizes may be symbolic (a graph compiled once for every batch size, say): ``xnumel``,
``rnumel``, buffer sizes, strides and indices are then expressions over size symbols
(``s0``, ``s1``...: positive integers, never 0 or 1), and ``size_hints`` gives each
symbol's example value. Such a kernel must be correct for every value: its extents and
the symbols it prints are arguments, not constants; the hints serve heuristics only
(block sizes). A kernel object lists the symbols it takes, in order, in ``size_args``
(``tilefuse.plugin.Kernel``). A backend that cannot render a symbolic spec raises (the
graph is then compiled per shape instead).

Everything here is plain data, sympy expressions and torch dtypes: nothing from
tilefuse's scheduler or codegen. ``KERNEL_SPEC_VERSION`` changes when the meaning
of any field does.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import sympy

from .ir.index import simplify_index

KERNEL_SPEC_VERSION = 1

X = sympy.Symbol("x", integer=True, nonnegative=True)
R = sympy.Symbol("r", integer=True, nonnegative=True)

Expr = sympy.Expr


class GroupKind(str, enum.Enum):
    """The shape of a kernel's iteration space."""

    POINTWISE = "pointwise"  # one dimension: rnumel is 1
    POINTWISE_2D = "pointwise-2d"  # a tiled pointwise kernel: every member is PER_XR
    REDUCTION = "reduction"  # r is reduced: at least one member is REDUCED


class Level(str, enum.Enum):
    """Where a member's values live in the iteration space."""

    PER_X = "x"
    PER_XR = "xr"
    REDUCED = "red"


@dataclass(frozen=True)
class BufferSpec:
    """A buffer's layout: element ``i`` (a tuple) is at ``offset + sum(i[k] * stride[k])``."""

    name: str
    dtype: Any  # torch.dtype
    size: tuple[Expr, ...]
    stride: tuple[Expr, ...]
    offset: Expr
    device: str


@dataclass(frozen=True)
class MemberSpec:
    """One value a kernel computes (see the module docstring).

    ``reads`` lists each ``(buffer, index)`` the body loads, with indices over ``X``
    and ``R`` (indirect reads carry their own symbols). ``reduction_type`` and
    ``src_dtype`` (the dtype the reduction accumulates in) are set for ``REDUCED``
    members only; ``dtype`` is the dtype of the buffer the member fills.
    """

    name: str
    level: Level
    dtype: Any  # torch.dtype
    store_index: Expr
    reads: tuple[tuple[str, Expr], ...]
    compute: Callable[[], Any] = field(repr=False, compare=False)
    reduction_type: str | None = None
    src_dtype: Any = None
    indirect: bool = False


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """One fused kernel to render. ``name`` is unique within the compiled graph."""

    name: str
    kind: GroupKind
    device: str
    xnumel: Expr
    rnumel: Expr
    members: tuple[MemberSpec, ...]
    stores: tuple[str, ...]
    buffers: Mapping[str, BufferSpec]
    version: int = KERNEL_SPEC_VERSION
    size_hints: Mapping[Any, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def symbolic(self) -> bool:
        """True when some size of this kernel is a symbol (see the module docstring)."""
        return bool(self.size_hints)

    def hint(self, expr: Any) -> int:
        """``expr`` (a size) at the size hints: for heuristics, never for correctness.
        ``KeyError`` for a symbol without a hint."""
        expr = sympy.sympify(expr)
        if expr.is_Integer:
            return int(expr)
        return int(expr.subs({s: self.size_hints[s] for s in expr.free_symbols}))

    @property
    def names(self) -> list[str]:
        """Every member's name, in dependency order."""
        return [m.name for m in self.members]

    @property
    def is_reduction(self) -> bool:
        return self.kind is GroupKind.REDUCTION

    def member(self, name: str) -> MemberSpec:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"{name!r} is not a member of kernel {self.name}")

    def simplify(self, expr: Any) -> Expr:
        """``expr`` simplified knowing ``0 <= X < xnumel`` and ``0 <= R < rnumel``."""
        return _simplify(sympy.sympify(expr), self.xnumel, self.rnumel)

    def describe(self) -> str:
        return f"{self.kind.value} x={self.xnumel} r={self.rnumel}: {', '.join(self.names)}"


@functools.lru_cache(maxsize=65536)
def _simplify(expr: Expr, xnumel: Expr, rnumel: Expr) -> Expr:
    return simplify_index(expr, {X: xnumel, R: rnumel})


@dataclass(frozen=True)
class FusionQuery:
    """What a backend's ``can_fuse_*`` sees of a group or node: its member names, its
    kind and iteration space. Cheap: built for every fusion the scheduler considers."""

    names: tuple[str, ...]
    kind: GroupKind
    xnumel: Expr
    rnumel: Expr
    device: str


__all__ = [
    "KERNEL_SPEC_VERSION",
    "R",
    "X",
    "BufferSpec",
    "FusionQuery",
    "GroupKind",
    "KernelSpec",
    "Level",
    "MemberSpec",
]
