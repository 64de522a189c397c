"""Measuring one kernel: CUDA events on a GPU, a wall-clock median on the CPU (tests only)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from .devices import device_type


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure.

    CPU: ``cpu_warmup`` untimed runs, then the median of ``cpu_reps`` timed runs.
    CUDA (as ``triton.testing.do_bench``): estimate one run, then warm up for about
    ``cuda_warmup_ms`` and take the median of runs filling about ``cuda_rep_ms``, each
    after clearing the L2 cache, timed with CUDA events.
    """

    cpu_warmup: int = 2
    cpu_reps: int = 10
    cuda_warmup_ms: float = 25.0
    cuda_rep_ms: float = 100.0


def median_ms(fn: Callable[[], None], device: str, config: TimingConfig) -> float:
    """The median time of ``fn()`` on ``device`` in milliseconds.

    On CUDA, ``device`` must be the current device (``measure`` makes it so): the CUDA
    events record on its current stream.
    """
    if device_type(device) == "cuda":
        return _cuda_median_ms(fn, device, config)
    for _ in range(config.cpu_warmup):
        fn()
    samples = []
    for _ in range(max(1, config.cpu_reps)):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _cuda_median_ms(fn: Callable[[], None], device: str, config: TimingConfig) -> float:
    import torch

    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device=device)
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    n_warmup = max(1, int(config.cuda_warmup_ms / estimate))
    n_rep = max(1, int(config.cuda_rep_ms / estimate))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    for _ in range(n_warmup):
        fn()
    for i in range(n_rep):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
