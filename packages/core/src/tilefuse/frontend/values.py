"""Lowering-time tensors: a dtype, a device, sizes and a way to load any element.

A ``BufferValue`` reads a realized ``Buffer``. A ``LazyValue`` is an unrealized
pointwise body: views, casts and elementwise math compose loaders without
materializing anything, so they cost nothing until a consumer realizes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..ir.index import Expr
from ..ir.nodes import Buffer
from ..ir.ops import ops, trace_reads


class Value:
    dtype: torch.dtype
    device: torch.device
    size: tuple[Expr, ...]

    def load(self, index: Sequence[Expr]) -> Any:
        raise NotImplementedError

    @property
    def rank(self) -> int:
        return len(self.size)


@dataclass(eq=False)
class BufferValue(Value):
    buffer: Buffer

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.buffer.dtype

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.buffer.device

    @property
    def size(self) -> tuple[Expr, ...]:  # type: ignore[override]
        return self.buffer.layout.size

    def load(self, index: Sequence[Expr]) -> Any:
        return ops.load(self.buffer.name, self.buffer.layout.index(index))


@dataclass(eq=False)
class LazyValue(Value):
    dtype: torch.dtype  # type: ignore[misc]
    device: torch.device  # type: ignore[misc]
    size: tuple[Expr, ...]  # type: ignore[misc]
    fn: Callable[[Sequence[Expr]], Any]
    _cost: int | None = None
    _reads: frozenset[str] | None = None
    # Strides eager gives this value; realizing it uses them so that graph
    # outputs and saved-for-backward tensors keep the layout autograd expects.
    stride_hint: tuple[Expr, ...] | None = None
    # Names of the aten nodes whose math this body inlines (for reports and errors).
    origins: tuple[str, ...] = ()

    def load(self, index: Sequence[Expr]) -> Any:
        return self.fn(index)

    def cost(self) -> int:
        """Ops in the body: large bodies are realized rather than inlined again."""
        if self._cost is None:
            self._trace()
        assert self._cost is not None
        return self._cost

    def read_names(self) -> frozenset[str]:
        """The buffers the body loads. None: index math (an ``arange``, a ``full``, a mask
        built from them), which costs less to recompute than to load."""
        if self._reads is None:
            self._trace()
        assert self._reads is not None
        return self._reads

    def _trace(self) -> None:
        from ..ir.nodes import index_symbols

        tracer = trace_reads(self.fn, index_symbols("c", self.rank))
        self._cost = tracer.op_count
        self._reads = frozenset(name for name, _ in tracer.reads)


def lazy(
    like: Value,
    fn: Callable[[Sequence[Expr]], Any],
    dtype: torch.dtype | None = None,
    size: Sequence[Expr] | None = None,
) -> LazyValue:
    """A ``LazyValue`` on ``like``'s device, with its dtype and size unless given."""
    return LazyValue(
        dtype or like.dtype,
        like.device,
        tuple(size) if size is not None else like.size,
        fn,
    )
