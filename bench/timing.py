"""Timing and kernel counting: ``triton.testing.do_bench`` medians on CUDA, perf_counter on CPU.

``do_bench``'s keywords differ across Triton releases (``return_mode`` is newer than
``quantiles``; ``fast_flush`` and ``device_type`` came and went), so the call is built from its
signature: only ``warmup`` and ``rep`` (both in milliseconds of run time, not counts) are passed
everywhere, and the median is asked for through ``return_mode="median"`` where it exists and
``quantiles=[0.5]`` otherwise.
"""

from __future__ import annotations

import gc
import inspect
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# (warmup, rep) for do_bench, in milliseconds of GPU time.
GPU_BUDGET_MS = {"full": (100, 500), "quick": (25, 100)}
# (warmup calls, timed calls) for the CPU timer.
CPU_CALLS = {"full": (3, 15), "quick": (1, 5)}


def _as_float(value: Any) -> float:
    """do_bench returns a float, a one-element list, or a tensor depending on the release."""
    if isinstance(value, torch.Tensor):
        value = value.flatten()[0].item()
    if isinstance(value, (list, tuple)):
        value = value[0]
    return float(value)


def do_bench_median(
    fn: Callable[[], Any],
    *,
    warmup_ms: float,
    rep_ms: float,
    grad_to_none: Sequence[torch.Tensor] | None = None,
    do_bench: Callable[..., Any] | None = None,
) -> float:
    """Median milliseconds of ``fn`` from ``triton.testing.do_bench`` (any Triton 3.x).

    ``do_bench`` may be injected for tests; by default Triton's is used.
    """
    if do_bench is None:
        from triton.testing import do_bench
    try:
        params = inspect.signature(do_bench).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {"warmup": warmup_ms, "rep": rep_ms}
    if grad_to_none:
        kwargs["grad_to_none"] = list(grad_to_none)
    if "return_mode" in params:
        kwargs["return_mode"] = "median"
    else:
        kwargs["quantiles"] = [0.5]
    return _as_float(do_bench(fn, **kwargs))


def _clear_grads(tensors: Iterable[torch.Tensor] | None) -> None:
    for t in tensors or ():
        t.grad = None


@dataclass(frozen=True)
class Timer:
    """Times zero-argument callables on one device; ``quick`` trades precision for speed."""

    device: torch.device
    quick: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def method(self) -> str:
        return "triton.testing.do_bench median" if self.is_cuda else "time.perf_counter median"

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def median_ms(
        self, fn: Callable[[], Any], grad_to_none: Sequence[torch.Tensor] | None = None
    ) -> float:
        """Median time of one call of ``fn`` in ms, after warmup; grads reset outside timing."""
        budget = "quick" if self.quick else "full"
        if self.is_cuda:
            warmup_ms, rep_ms = GPU_BUDGET_MS[budget]
            return do_bench_median(
                fn, warmup_ms=warmup_ms, rep_ms=rep_ms, grad_to_none=grad_to_none
            )
        warmup, reps = CPU_CALLS[budget]
        for _ in range(warmup):
            _clear_grads(grad_to_none)
            fn()
        times = []
        for _ in range(reps):
            _clear_grads(grad_to_none)
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    def count_kernels(
        self, fn: Callable[[], Any], grad_to_none: Sequence[torch.Tensor] | None = None
    ) -> int | None:
        """GPU kernels one call of ``fn`` launches (torch.profiler CUDA kernel events).

        Memcpy/memset activities are not kernels and are not counted. ``None`` on CPU, where
        there are no kernel launches to count.
        """
        if not self.is_cuda:
            return None
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        _clear_grads(grad_to_none)
        self.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            self.synchronize()
        skip = ("Memcpy", "Memset", "Context Sync")
        return sum(
            1
            for e in prof.events()
            if e.device_type == DeviceType.CUDA and not e.name.startswith(skip)
        )

    def free_memory(self) -> None:
        gc.collect()
        if self.is_cuda:
            torch.cuda.empty_cache()
