"""GEMM templates of symbolic sizes: the selector's pick per size bucket, made at run time.

A graph compiled once for every size cannot choose its GEMM kernels when it compiles:
the best kernel depends on the sizes. ``BucketedChoice`` asks the template selector at
the first call whose sizes fall into a new *bucket*: every size symbol rounded up to a
power of two. The question is about the bucket's representative problem (the step's
layouts at the rounded sizes), so the autotune winners cache keeps one winner per
bucket, shared by every size in it and by later processes.

A pick serves every size of its bucket only when its choice declares ``any_size`` (its
kernel reads sizes and strides when it runs: the Triton template, eager torch, the
vendor library), which holds for sizes no larger than the ones it was picked for: so
buckets are used only where every size and stride of the step grows with its symbols
(``grows_with_symbols``; ``65 - s0``, a slice's length, shrinks, and at the rounded
size a residual of many rows could look like one broadcast row). Another pick, or any
pick of a step whose sizes do not all grow, is made at each call's exact sizes, and
those are kept in an LRU of ``EXACT_PICKS_LIMIT`` per template. A selection that fails
runs the call with eager torch and the epilogue's reference meaning
(``plugin.ExternChoice``), with one warning per GEMM; under ``TILEFUSE_STRICT`` it raises.
"""

from __future__ import annotations

import logging
from typing import Any

import sympy
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import config, counters, plugin
from ..backend_selection import template_selector
from ..errors import CompileError
from ..lru import BoundedLRU
from ..scheduler import TemplateStep

log = logging.getLogger("tilefuse")

#: Picks kept per template for choices that serve one exact size (not ``any_size``).
EXACT_PICKS_LIMIT = 16


def bucket_of(value: int) -> int:
    """The bucket of a size: the least power of two at or above it."""
    return 1 << max(int(value) - 1, 0).bit_length()


def grows_with_symbols(expr: Any) -> bool:
    """Whether ``expr`` never decreases when a size symbol grows, shown by its form: a
    non-negative integer, a symbol, or sums, products and positive integer powers of
    such. Rounding every symbol up then rounds ``expr`` up too. ``False`` for anything
    else (a difference, a ``FloorDiv``)."""
    e = sympy.sympify(expr)
    if e.is_Integer:
        return bool(e >= 0)
    if e.is_Symbol:
        return True
    if e.is_Add or e.is_Mul:
        return all(grows_with_symbols(a) for a in e.args)
    if e.is_Pow:
        return bool(e.exp.is_Integer and e.exp > 0) and grows_with_symbols(e.base)
    return False


class BucketedChoice:
    """The ``Choice`` of a GEMM template step whose sizes are symbolic: ``run(*inputs,
    out=..., sizes=...)`` takes the values of ``symbols`` (in that order) for this call,
    selects on a new bucket or exact size (see the module docstring), then runs the pick.
    Counts each selection in ``stats()["gemm_bucket_selections"]``."""

    def __init__(
        self, step: TemplateStep, symbols: tuple[sympy.Symbol, ...], exprs: list[Any]
    ) -> None:
        """``exprs``: every size, stride and offset of the step's tensors (buckets are used
        only when all of them grow with the symbols)."""
        self.step = step
        self.symbols = symbols
        self.bucketed = all(grows_with_symbols(e) for e in exprs)
        self.name = f"bucketed/{step.op}"
        # bucket -> the pick, or None: its pick serves exact sizes only
        self._by_bucket: dict[tuple[int, ...], Any] = {}
        self._exact: BoundedLRU[tuple[int, ...], Any] = BoundedLRU(EXACT_PICKS_LIMIT)
        self._warned = False
        self._last: tuple[tuple[int, ...], Any] | None = None  # the last call's sizes, pick

    def compile(self) -> None:
        return None

    def run(self, *inputs: Any, out: Any, sizes: tuple[int, ...]) -> None:
        last = self._last  # consecutive calls of one size (the common case) skip the lookup
        choice = last[1] if last is not None and last[0] == sizes else self.pick(tuple(sizes))
        choice.run(*inputs, out=out)

    def pick(self, sizes: tuple[int, ...]) -> Any:
        """The choice that runs a call with these symbol values."""
        choice = self._pick(sizes)
        self._last = (sizes, choice)
        return choice

    def _pick(self, sizes: tuple[int, ...]) -> Any:
        if self.bucketed:
            bucket = tuple(bucket_of(v) for v in sizes)
            if bucket not in self._by_bucket:
                choice = self._select(bucket)
                if getattr(choice, "any_size", False):
                    self._by_bucket[bucket] = choice
                    return choice
                self._by_bucket[bucket] = None  # its picks serve one exact size each
                self._exact.put(bucket, choice)
            elif self._by_bucket[bucket] is not None:
                return self._by_bucket[bucket]
        choice = self._exact.get(sizes)
        if choice is None:
            choice = self._select(sizes)
            self._exact.put(sizes, choice)
        return choice

    def _select(self, values: tuple[int, ...]) -> Any:
        op, inputs, layout, epilogue = self.step.request(dict(zip(self.symbols, values)))
        counters.bump("gemm_bucket_selections")
        try:
            selector = template_selector()
            with unset_fake_temporarily():
                selection = selector.select(op, inputs, layout, epilogue)
                selection.choice.compile()
        except Exception as exc:  # a failed selection must not fail the user's call
            what = f"{op} at sizes {dict(zip(map(str, self.symbols), values))}"
            if config.strict():
                raise CompileError(f"selecting the GEMM kernel for {what} failed: {exc}") from exc
            # one warning per GEMM; further failures (other sizes) are logged quietly
            report = log.info if self._warned else log.warning
            self._warned = True
            report("tilefuse: selecting the GEMM kernel for %s failed (%s: %s); it runs as "
                   "eager torch", what, type(exc).__name__, exc)  # fmt: skip
            return plugin.ExternChoice(op, epilogue)
        log.info("tilefuse: %s", selection.summary)
        return selection.choice

    def __repr__(self) -> str:
        return f"BucketedChoice({self.step.op!r}, symbols={[str(s) for s in self.symbols]})"
