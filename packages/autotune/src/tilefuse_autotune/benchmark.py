"""Compiling candidates in parallel and benchmarking them in an isolated process per device.

Every candidate costs at most itself: a build or run that raises, crashes its
process, hangs past its limit or computes a wrong result becomes a failed
``Outcome`` with a reason, and the next candidate runs in a fresh worker when the
old one died. The extern choice is measured first; it is the correctness reference.
"""

from __future__ import annotations

import atexit
import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import measure
from .extern import ExternChoice
from .progress import Progress
from .timing import TimingConfig
from .worker import TaskError, Worker, WorkerCrashed, WorkerTimeout

# Failure reasons, in the order the summary lists them.
COMPILE = "compile error"
CRASH = "crash"
TIMEOUT = "timeout"
WRONG = "wrong result"
ERROR = "run error"
REASONS = (COMPILE, CRASH, TIMEOUT, WRONG, ERROR)


@dataclass(frozen=True)
class Outcome:
    """One candidate's result: ``time_ms`` when it passed, else ``reason`` and ``detail``."""

    label: str
    time_ms: float | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class BenchConfig:
    """Limits: ``timeout_s`` per candidate run (check + timing), ``compile_timeout_s`` per
    build, ``compile_workers`` processes building at once (default: CPU count, at most 16)."""

    timing: TimingConfig = TimingConfig()
    timeout_s: float = 60.0
    compile_timeout_s: float = 600.0
    compile_workers: int | None = None


class Bench:
    """Owns the worker processes: a compile pool and one benchmark worker per device."""

    def __init__(self) -> None:
        self._compile_workers: list[Worker] = []
        self._bench_workers: dict[str, Worker] = {}

    def bench_worker(self, device: str) -> Worker:
        if device not in self._bench_workers:
            self._bench_workers[device] = Worker()
        return self._bench_workers[device]

    def _compile_pool(self, size: int) -> list[Worker]:
        while len(self._compile_workers) < size:
            self._compile_workers.append(Worker())
        return self._compile_workers[:size]

    def compile_all(
        self, labels: Sequence[str], choices: Sequence[Any], config: BenchConfig
    ) -> list[Any | Outcome]:
        """Build every choice in parallel: the built choice, or a failed ``Outcome``."""
        todo = [i for i, c in enumerate(choices) if not isinstance(c, ExternChoice)]
        results: list[Any | Outcome] = list(choices)
        if not todo:
            return results
        size = config.compile_workers or min(16, os.cpu_count() or 1)
        idle: queue.Queue[Worker] = queue.Queue()
        for w in self._compile_pool(max(1, min(size, len(todo)))):
            idle.put(w)

        def build(i: int) -> Any | Outcome:
            worker = idle.get()
            try:
                built = worker.call(
                    measure.compile_choice,
                    choices[i],
                    timeout_s=config.compile_timeout_s,
                )
                return choices[i] if built is None else built
            except TaskError as exc:
                return Outcome(labels[i], reason=COMPILE, detail=str(exc))
            except WorkerCrashed as exc:
                return Outcome(labels[i], reason=COMPILE, detail=f"build process {exc}")
            except WorkerTimeout as exc:
                return Outcome(labels[i], reason=COMPILE, detail=f"build timed out: {exc}")
            finally:
                idle.put(worker)

        with ThreadPoolExecutor(max_workers=idle.qsize()) as pool:
            for i, result in zip(todo, pool.map(build, todo)):
                results[i] = result
        return results

    def measure_one(
        self, problem: measure.Problem, label: str, choice: Any, config: BenchConfig
    ) -> Outcome:
        """Check then time ``choice`` in the device's worker: its ``Outcome``."""
        return self._in_worker(problem, label, config, measure.measure, choice, config.timing)

    def check_one(
        self, problem: measure.Problem, label: str, choice: Any, config: BenchConfig
    ) -> Outcome:
        """Run ``choice`` once in the device's worker and compare with extern (no timing);
        a passing check is an ``Outcome`` with ``time_ms`` ``None`` and ``ok``."""
        return self._in_worker(problem, label, config, measure.check, choice)

    def _in_worker(
        self, problem: measure.Problem, label: str, config: BenchConfig, task: Any, *args: Any
    ) -> Outcome:
        worker = self.bench_worker(problem.layout.device)
        try:
            result = worker.call(
                task,
                problem,
                *args,
                timeout_s=config.timeout_s,
                prepare_timeout_s=config.compile_timeout_s,
            )
        except TaskError as exc:
            reason = WRONG if str(exc).startswith("WrongResult") else ERROR
            return Outcome(label, reason=reason, detail=str(exc))
        except WorkerCrashed as exc:
            return Outcome(label, reason=CRASH, detail=str(exc))
        except WorkerTimeout as exc:
            return Outcome(label, reason=TIMEOUT, detail=str(exc))
        return Outcome(label, time_ms=None if result is None else float(result))

    def close(self) -> None:
        for w in [*self._compile_workers, *self._bench_workers.values()]:
            w.close()
        self._compile_workers.clear()
        self._bench_workers.clear()


_shared: Bench | None = None


def shared_bench() -> Bench:
    """The process-wide workers (kept warm between selections, stopped at exit)."""
    global _shared
    if _shared is None:
        _shared = Bench()
        atexit.register(_shared.close)
    return _shared


def release_workers() -> None:
    """Stop the process-wide worker processes now (a later selection starts fresh ones).

    Call it after a burst of selections to return the benchmark worker's device
    memory and CUDA context; it is also done at interpreter exit.
    """
    if _shared is not None:
        _shared.close()


def run_benchmarks(
    problem: measure.Problem,
    labels: Sequence[str],
    choices: Sequence[Any],
    config: BenchConfig,
    progress: Progress,
    bench: Bench | None = None,
) -> list[Outcome]:
    """Compile then measure every choice; one ``Outcome`` per choice, in order."""
    bench = bench or shared_bench()
    built = bench.compile_all(labels, choices, config)
    outcomes: list[Outcome] = []
    for label, item in zip(labels, built):
        if isinstance(item, Outcome):
            outcome = item
        else:
            outcome = bench.measure_one(problem, label, item, config)
        outcomes.append(outcome)
        progress.step(label, f"{outcome.time_ms:.4f} ms" if outcome.ok else outcome.reason or "")
    progress.close()
    return outcomes


def check_candidates(
    problem: measure.Problem,
    labels: Sequence[str],
    choices: Sequence[Any],
    config: BenchConfig,
    bench: Bench | None = None,
) -> list[Outcome]:
    """Build then check (run once against extern, untimed) every choice in isolated
    workers; one ``Outcome`` per choice, in order."""
    bench = bench or shared_bench()
    built = bench.compile_all(labels, choices, config)
    return [
        item if isinstance(item, Outcome) else bench.check_one(problem, label, item, config)
        for label, item in zip(labels, built)
    ]
