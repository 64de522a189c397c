"""A reduction over a symbolic row length, as one compiled variant per bucket of that length.

One kernel configured once cannot serve every row length well: a looped kernel sized
for a short first row walks a long one in many small steps, three times for a softmax.
``RowVariantKernel`` renders, per bucket of the row length (the least power of two at
or above it), the config a static row of the bucket's length would get
(``heuristics.choose_config(spec, bucket)``: persistent up to
``heuristics.PERSISTENT_MAX_R``), and runs each call with its bucket's variant. The
first call's bucket (the size hint's) is the variant built with the graph; another
bucket's variant is compiled by Triton when a call first reaches it.

Every variant is one source rendering of the same spec, so it takes the same arguments;
one that would not (a config printing other size symbols) is not used, and the looped
kernel, which serves every length, runs those calls instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tilefuse import plugin

from .heuristics import next_pow2


class RowVariantKernel:
    """The ``TritonKernel`` interface (``name``, ``arg_names``, ``size_args``,
    ``source``, ``build()``, ``kernel(*tensors, *sizes)``, ``cpp_launch()``) over
    per-bucket variants. ``render(row_length)`` makes the variant for rows of at most
    ``row_length`` elements (``None``: the looped kernel for every length)."""

    def __init__(
        self, spec: plugin.KernelSpec, render: Callable[[int | None], Any], hint_rows: int
    ) -> None:
        self.name = spec.name
        self._render = render
        self._variants: dict[int, Any] = {}
        self._looped: Any = None
        self._last: tuple[tuple[Any, ...], Any] | None = None  # the last call's sizes, kernel
        first = render(self.bucket(hint_rows))
        self._first = first
        self._variants[self.bucket(hint_rows)] = first
        self.arg_names = first.arg_names
        self.size_args = first.size_args
        self._rows = plugin.size_function([spec.rnumel], self.size_args)
        self.source = first.source  # the report's and debug directory's copy
        self.config = first.config

    @staticmethod
    def bucket(rows: int) -> int:
        return next_pow2(max(int(rows), 1))

    def build(self) -> None:
        self._first.build()

    def cpp_launch(self) -> None:
        return None  # its extents and grid are computed per call, in Python

    def variant(self, rows: int) -> Any:
        """The kernel that runs rows of ``rows`` elements."""
        bucket = self.bucket(rows)
        kernel = self._variants.get(bucket)
        if kernel is None:
            kernel = self._render(bucket)
            if kernel.arg_names != self.arg_names or kernel.size_args != self.size_args:
                kernel = self.looped()
            # buckets past the persistent limit all loop alike: one compile serves them
            # (block sizes are launch arguments, not source: both must agree)
            same = [k for k in self._variants.values()
                    if (k.source, k.config) == (kernel.source, kernel.config)]  # fmt: skip
            self._variants[bucket] = kernel = same[0] if same else kernel
        return kernel

    def looped(self) -> Any:
        """The looped kernel, which serves every row length; ``RuntimeError`` if it would
        take other arguments than the variants (the spec's rendering disagrees with
        itself: a bug, never a call with misplaced arguments)."""
        if self._looped is None:
            kernel = self._render(None)
            if kernel.arg_names != self.arg_names or kernel.size_args != self.size_args:
                raise RuntimeError(
                    f"{self.name}: the looped kernel takes ({kernel.arg_names}, "
                    f"{kernel.size_args}), its variants ({self.arg_names}, {self.size_args})"
                )
            self._looped = kernel
        return self._looped

    def __call__(self, *args: Any) -> None:
        sizes = args[len(self.arg_names) :]
        last = self._last  # consecutive calls of one size (the common case) skip the lookup
        if last is None or last[0] != sizes:
            (rows,) = self._rows(*sizes)
            last = self._last = (sizes, self.variant(rows))
        last[1](*args)

    def __repr__(self) -> str:
        return f"RowVariantKernel({self.name!r}, buckets={sorted(self._variants)})"
