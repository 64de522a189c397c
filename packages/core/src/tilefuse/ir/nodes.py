"""IR nodes: buffers with layouts, and what computes them.

A ``Buffer`` has a ``Layout`` (device, dtype, sizes, strides, offset). What
fills it is one of:

- ``Pointwise``: ``body(index) -> value`` over ``ranges``;
- ``Reduction``: ``body(index, rindex) -> value`` reduced over
  ``reduction_ranges`` with ``reduction_type``;
- ``Extern``: an eager torch call on realized buffers;
- ``Template``: a GEMM-like kernel chosen by the autotuner, with an epilogue.

Sizes are sympy expressions; index symbols are created by ``index_symbols``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sympy
import torch

from .index import Expr
from .symbolic import size_expr


def index_symbols(prefix: str, count: int) -> list[sympy.Symbol]:
    """Fresh non-negative integer symbols ``prefix0``, ``prefix1``..."""
    return [sympy.Symbol(f"{prefix}{i}", integer=True, nonnegative=True) for i in range(count)]


def sympify_sizes(sizes: Sequence[Any]) -> tuple[Expr, ...]:
    """Sizes (ints, ``torch.SymInt``\\ s or expressions) as IR expressions; a ``SymInt``
    is converted without being evaluated (``symbolic.size_expr``)."""
    return tuple(size_expr(s) for s in sizes)


def sympify_strides(strides: Sequence[Any]) -> tuple[Expr, ...]:
    """A tensor's strides as IR expressions (``symbolic.size_expr`` with ``stride``)."""
    return tuple(size_expr(s, stride=True) for s in strides)


def product(sizes: Sequence[Expr]) -> Expr:
    out: Expr = sympy.Integer(1)
    for s in sizes:
        out = out * s
    return out


def contiguous_strides(sizes: Sequence[Expr]) -> tuple[Expr, ...]:
    strides: list[Expr] = []
    running: Expr = sympy.Integer(1)
    for s in reversed(sizes):
        strides.append(running)
        running = running * s
    return tuple(reversed(strides))


def stride_order(sizes: Sequence[Expr], strides: Sequence[Expr]) -> list[int] | None:
    """The dims of more than one element, outermost first in memory (strides descending,
    ties in logical order), or ``None`` where one of their strides is symbolic."""
    dims = [d for d in range(len(sizes)) if sizes[d] != 1]
    if not all(sympy.sympify(strides[d]).is_Integer for d in dims):
        return None
    return sorted(dims, key=lambda d: -int(strides[d]))


def overlaps(sizes: Sequence[Expr], strides: Sequence[Expr]) -> bool:
    """True when two indices of this layout address one element (an ``expand``'s stride
    0, a diagonal of one); ``False`` where that depends on symbolic sizes or strides
    (a symbolic size is at least 2: Dynamo specializes 0 and 1)."""
    if any(s == 0 for s in sizes):
        return False
    if any(st == 0 and s != 1 for s, st in zip(sizes, strides)):
        return True
    if not all(sympy.sympify(s).is_Integer for s in sizes):
        return False
    order = stride_order(sizes, strides)
    if order is None:
        return False
    extent = 1  # elements spanned by the dims inner to the current one
    for d in reversed(order):
        if int(strides[d]) < extent:
            return True
        extent += (int(sizes[d]) - 1) * int(strides[d])
    return False


def dense_strides_like(sizes: Sequence[Expr], strides: Sequence[Expr]) -> tuple[Expr, ...]:
    """Strides with the dims in ``strides``' order (largest outermost) and no gaps: a
    view's strides into a larger buffer (one head of a fused QKV projection, say) become
    a dense tensor walked in the same order. A broadcast dim (stride 0: an ``expand``)
    goes outermost, keeping the others' order: innermost, it would leave the last dim of
    an expanded attention bias, which fused kernels need unit-stride, strided. ``strides``
    unchanged where one that matters is symbolic (its order is not known)."""
    order = stride_order(sizes, strides)
    if order is None:
        return tuple(strides)
    order = [d for d in order if strides[d] == 0] + [d for d in order if strides[d] != 0]
    out = list(strides)
    running: Expr = sympy.Integer(1)
    for d in reversed(order):
        out[d] = running
        running = running * sizes[d]
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    """Where a buffer's elements live: ``offset + sum(index[i] * stride[i])``."""

    device: torch.device
    dtype: torch.dtype
    size: tuple[Expr, ...]
    stride: tuple[Expr, ...]
    offset: Expr = sympy.Integer(0)

    @classmethod
    def contiguous(cls, device: torch.device, dtype: torch.dtype, size: Sequence[Any]) -> Layout:
        sizes = sympify_sizes(size)
        return cls(device, dtype, sizes, contiguous_strides(sizes))

    @classmethod
    def of_tensor(cls, tensor: torch.Tensor) -> Layout:
        """The layout of ``tensor`` (a real, fake or meta tensor) as it is in memory."""
        return cls(
            tensor.device,
            tensor.dtype,
            sympify_sizes(tensor.shape),
            sympify_strides(tensor.stride()),
            size_expr(tensor.storage_offset()),
        )

    @classmethod
    def of_result(cls, tensor: torch.Tensor) -> Layout:
        """The layout of an op's result as the wrapper holds it: its own tensor, which
        kernels address from its data pointer, so the offset is 0 even where eager's result
        is a view into its input at a storage offset (``diagonal(1)``, say)."""
        return replace(cls.of_tensor(tensor), offset=sympy.Integer(0))

    def index(self, idx: Sequence[Expr]) -> Expr:
        if len(idx) != len(self.size):
            raise ValueError(f"index of rank {len(idx)} into a buffer of rank {len(self.size)}")
        out = self.offset
        for i, st in zip(idx, self.stride):
            out = out + i * st
        return out

    @property
    def numel(self) -> Expr:
        return product(self.size)


@dataclass
class Pointwise:
    ranges: tuple[Expr, ...]
    body: Callable[[Sequence[Expr]], Any]


@dataclass
class Reduction:
    """``reduction_type`` of ``body`` over ``reduction_ranges``, for each index of ``ranges``.

    Types: sum, prod, max, min, argmax, argmin, any, logsumexp (max(v) +
    log(sum(exp(v - max(v)))), computed online in one pass), and softmax_sum
    (sum(exp(v - max(v))), NaN where max(v) is not finite, as that expression is in
    eager; only for backends declaring ``plugin.CAP_SOFTMAX_SUM``).
    """

    ranges: tuple[Expr, ...]
    reduction_ranges: tuple[Expr, ...]
    reduction_type: str
    body: Callable[[Sequence[Expr], Sequence[Expr]], Any]
    src_dtype: torch.dtype


@dataclass
class Extern:
    """``op(*args, **kwargs)`` run eagerly; ``args`` hold ``Buffer`` objects where tensors go."""

    op: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reason: str = ""

    def returns_nothing(self) -> bool:
        """True for an op run for its effect alone (``_assert_async``'s check): its
        schema declares no result. Such a step is kept though nothing reads it."""
        schema = getattr(self.op, "_schema", None)
        return schema is not None and not schema.returns

    def may_alias_inputs(self) -> bool:
        """True when a result may share memory with a tensor argument: the op's schema
        says so (``view.dtype``, ``view_as_real``...), or the op has no schema to ask."""
        schema = getattr(self.op, "_schema", None)
        if schema is None:
            return True
        return any(r.alias_info is not None for r in schema.returns)


@dataclass
class Template:
    """A GEMM-family op (``"mm"``, ``"addmm"``, ``"bmm"``) on realized ``inputs``."""

    op: str
    inputs: tuple[Buffer, ...]


@dataclass
class View:
    """A strided view of another buffer's storage (``Buffer.layout`` is the view's)."""

    base: Buffer


@dataclass(eq=False)
class Buffer:
    """A named tensor of the compiled graph. ``data`` is ``None`` for graph inputs."""

    name: str
    layout: Layout
    data: Pointwise | Reduction | Extern | Template | View | None = None
    # For one output of a multi-output extern: (parent extern buffer, output index).
    output_of: tuple[Buffer, int] | None = None
    origins: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return self.layout.dtype

    @property
    def device(self) -> torch.device:
        return self.layout.device

    def is_input(self) -> bool:
        return self.data is None and self.output_of is None

    def kind(self) -> str:
        if self.data is None:
            return "input" if self.output_of is None else "extern-output"
        return type(self.data).__name__.lower()

    def __repr__(self) -> str:
        return f"Buffer({self.name}, {self.kind()}, {list(self.layout.size)}, {self.dtype})"
