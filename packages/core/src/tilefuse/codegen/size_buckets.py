"""GEMM templates of symbolic sizes: the selector's pick per size bucket, made at run time.

A graph compiled once for every size cannot choose its GEMM kernels when it compiles:
the best kernel depends on the sizes. ``BucketedChoice`` asks the template selector at
the first call whose sizes fall into a new *bucket*: every size symbol rounded up to a
power of two. The question is about the bucket's representative problem (the step's
layouts at the rounded sizes), so the autotune winners cache keeps one winner per
bucket, shared by every size in it and by later processes.

A pick serves every size of its bucket only when its choice declares ``any_size`` (its
kernel reads sizes and strides when it runs: the Triton template, eager torch, the
vendor library). Another pick is made again at each call's exact sizes, and those are
kept in an LRU of ``EXACT_PICKS_LIMIT`` per template. A selection that fails runs the
call with eager torch and the epilogue's reference meaning (``plugin.ExternChoice``),
with one warning; under ``TILEFUSE_STRICT`` it raises.
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


class BucketedChoice:
    """The ``Choice`` of a GEMM template step whose sizes are symbolic: ``run(*inputs,
    out=..., sizes=...)`` takes the values of ``symbols`` (in that order) for this call,
    selects on a new bucket (see the module docstring), then runs the pick. Counts each
    selection in ``stats()["gemm_bucket_selections"]``."""

    def __init__(self, step: TemplateStep, symbols: tuple[sympy.Symbol, ...]) -> None:
        self.step = step
        self.symbols = symbols
        self.name = f"bucketed/{step.op}"
        # bucket -> the pick, or None: its pick serves exact sizes only
        self._by_bucket: dict[tuple[int, ...], Any] = {}
        self._exact: BoundedLRU[tuple[int, ...], Any] = BoundedLRU(EXACT_PICKS_LIMIT)

    def compile(self) -> None:
        return None

    def run(self, *inputs: Any, out: Any, sizes: tuple[int, ...]) -> None:
        self.pick(tuple(sizes)).run(*inputs, out=out)

    def pick(self, sizes: tuple[int, ...]) -> Any:
        """The choice that runs a call with these symbol values."""
        bucket = tuple(bucket_of(v) for v in sizes)
        if bucket not in self._by_bucket:
            choice = self._select(bucket)
            self._by_bucket[bucket] = choice if getattr(choice, "any_size", False) else None
            if self._by_bucket[bucket] is not None:
                return choice
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
            log.warning("tilefuse: selecting the GEMM kernel for %s failed (%s: %s); it runs "
                        "as eager torch", what, type(exc).__name__, exc)  # fmt: skip
            return plugin.ExternChoice(op, epilogue)
        log.info("tilefuse: %s", selection.summary)
        return selection.choice

    def __repr__(self) -> str:
        return f"BucketedChoice({self.step.op!r}, symbols={[str(s) for s in self.symbols]})"
