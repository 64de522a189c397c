"""Measuring one kernel: CUDA events on a GPU, a wall-clock median on the CPU (tests only)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .devices import device_type


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure.

    CPU: ``cpu_warmup`` untimed runs, then the median of ``cpu_reps`` timed runs.
    CUDA (as ``triton.testing.do_bench``, with a shorter budget): time ``screen_runs``
    runs, then warm up for about ``cuda_warmup_ms`` and take the median of runs filling
    about ``cuda_rep_ms``, each after clearing the L2 cache, timed with CUDA events.

    Screening: given a ``cutoff_ms``, a candidate whose median over its first
    ``screen_runs`` runs is above it gets that median, unrefined: it cannot win, and a full
    measurement of each loser was most of a max-mode selection's time. The autotuner's
    cutoff is ``screen_margin`` times the best time measured so far.
    """

    cpu_warmup: int = 2
    cpu_reps: int = 10
    # do_bench's 25 / 100 ms made the full measurements of a max selection about 3 s of
    # its wall time (20 GEMM candidates at 0.12 s each, H200); 10 / 40 ms still takes the
    # median of 25 flushed runs of a 1.5 ms product.
    cuda_warmup_ms: float = 10.0
    cuda_rep_ms: float = 40.0
    screen_runs: int = 5
    screen_margin: float = 1.25

    def __post_init__(self) -> None:
        if self.screen_runs < 1 or not self.screen_margin >= 1.0:
            raise ValueError(
                f"TimingConfig: screen_runs must be >= 1 and screen_margin >= 1 (a candidate "
                f"is screened out only when slower than the best); got {self.screen_runs}, "
                f"{self.screen_margin}"
            )


# Unflushed runs before a CUDA screen: its median is compared with warmed, full medians.
SCREEN_WARMUP_RUNS = 3


def median_ms(
    fn: Callable[[], None], device: str, config: TimingConfig, cutoff_ms: float | None = None
) -> float:
    """The median time of ``fn()`` on ``device`` in milliseconds; above ``cutoff_ms``
    after the first ``config.screen_runs`` runs, their median (see ``TimingConfig``).

    On CUDA, ``device`` must be the current device (``measure`` makes it so): the CUDA
    events record on its current stream.
    """
    if device_type(device) == "cuda":
        return _cuda_median_ms(fn, device, config, cutoff_ms)
    for _ in range(config.cpu_warmup):
        fn()

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    reps = max(1, config.cpu_reps)
    samples = [timed() for _ in range(min(reps, max(1, config.screen_runs)))]
    if _screened_out(samples, cutoff_ms):
        return statistics.median(samples)
    samples += [timed() for _ in range(reps - len(samples))]
    return statistics.median(samples)


def _screened_out(samples: list[float], cutoff_ms: float | None) -> bool:
    return cutoff_ms is not None and statistics.median(samples) > cutoff_ms


def _cuda_median_ms(
    fn: Callable[[], None], device: str, config: TimingConfig, cutoff_ms: float | None
) -> float:
    import torch

    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device=device)

    def flushed_runs(n: int) -> tuple[list[float], float]:
        """Each of ``n`` runs' time after an L2 flush, and one iteration's whole cost (the
        flush included: what sizes the warm-up and the repetitions, as do_bench does)."""
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        loop = starts[0].elapsed_time(ends[-1]) / max(1, n - 1) if n > 1 else 0.0
        return [s.elapsed_time(e) for s, e in zip(starts, ends)], loop

    for _ in range(SCREEN_WARMUP_RUNS):  # the screen compares with warmed medians
        fn()
    torch.cuda.synchronize()
    screen, iteration = flushed_runs(max(1, config.screen_runs))
    if _screened_out(screen, cutoff_ms):
        return statistics.median(screen)
    estimate = max(iteration, statistics.median(screen), 1e-3)
    for _ in range(max(1, int(config.cuda_warmup_ms / estimate))):
        fn()
    return statistics.median(flushed_runs(max(1, int(config.cuda_rep_ms / estimate)))[0])


# A sustained comparison: rounds of back-to-back segments of about this many ms each.
SUSTAINED_ROUNDS = 6
SUSTAINED_SEGMENT_MS = 25.0


def sustained_ms(
    fns: Sequence[Callable[[], None]],
    device: str,
    expected_ms: Sequence[float],
    rounds: int = SUSTAINED_ROUNDS,
    segment_ms: float = SUSTAINED_SEGMENT_MS,
) -> list[float]:
    """Each of ``fns``' time per run in ms when they run as a graph runs them: back to back,
    with no L2 flush between runs and no idle time between them, so the device works at
    the clocks its power limit allows under load. One untimed segment of each, then
    ``rounds`` rounds of one segment each (about ``segment_ms`` of runs, sized by
    ``expected_ms``), in alternating order; the median over rounds of each segment's
    time per run.

    ``median_ms``'s flushed runs separate kernels by their own speed, with the device
    partly idle; between candidates that close, which runs faster inside a graph can be
    the other one (H200: Triton tiles that measured 2-8% faster than cuBLAS, flushed,
    were 2-7% slower in the graph). On CUDA, ``device`` must be the current device.
    """
    counts = [max(2, int(segment_ms / max(ms, 1e-3))) for ms in expected_ms]

    def segment(i: int) -> None:
        for _ in range(counts[i]):
            fns[i]()

    cuda = device_type(device) == "cuda"
    if cuda:
        import torch

    def mark() -> Any:
        """A point in time: a recorded CUDA event on the device, else the wall clock."""
        if not cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_ms(start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) if cuda else (end - start) * 1e3

    order = list(range(len(fns)))
    spans: list[list[tuple[Any, Any]]] = [[] for _ in fns]
    for i in order:
        segment(i)
    for r in range(rounds):
        for i in order if r % 2 == 0 else order[::-1]:
            start = mark()
            segment(i)
            spans[i].append((start, mark()))
    if cuda:
        torch.cuda.synchronize()
    return [statistics.median(elapsed_ms(s, e) / counts[i] for s, e in spans[i]) for i in order]
