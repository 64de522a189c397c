"""Compiling candidates in parallel and benchmarking them in isolated processes, one per GPU.

Every candidate costs at most itself: a build or run that raises, crashes its
process, hangs past its limit or computes a wrong result becomes a failed
``Outcome`` with a reason, and the next candidate runs in a fresh worker when the
old one died.

Builds and measurements overlap: a compile pool builds the candidates while one
benchmark worker per device (``devices.worker_devices``: the compiling GPU and every
other local GPU of the same model) takes each built candidate as soon as it is ready.
The extern choice needs no build and is queued first. Each worker is pinned to its GPU
(``devices.pinned_env``), creates the inputs there and computes the extern reference
there itself, so any worker can judge any candidate.

Timings from different workers are compared as they are. That is sound because every
worker's GPU is the same model as the compiling one (same ``get_device_name``: the same
SKU, so the same clocks and memory within the noise of one GPU); GPUs of another name
are left out rather than compared. A build that launches on the compiling GPU (Triton's
warm-up) may briefly share it with a measurement there.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from . import measure
from .devices import device_index, pinned_env, worker_devices
from .extern import ExternChoice
from .progress import Progress
from .timing import TimingConfig
from .worker import TaskError, Worker, WorkerCrashed, WorkerFailure, WorkerTimeout

# Failure reasons, in the order the summary lists them.
COMPILE = "compile error"
CRASH = "crash"
TIMEOUT = "timeout"
WRONG = "wrong result"
ERROR = "run error"
REASONS = (COMPILE, CRASH, TIMEOUT, WRONG, ERROR)


@dataclass(frozen=True)
class Outcome:
    """One candidate's result: ``time_ms`` when it passed, else ``reason`` and ``detail``.

    ``worker`` names the benchmark worker that ran it (``"cuda:1"``; ``"cpu#0"`` when
    several share one device); ``None`` when it never ran (its build failed).
    """

    label: str
    time_ms: float | None = None
    reason: str | None = None
    detail: str = ""
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class BenchConfig:
    """Limits: ``timeout_s`` per candidate run (check + timing), ``compile_timeout_s`` per
    build, ``compile_workers`` processes building at once (default: the CPU count less one
    core per benchmark worker, which runs at the same time, at least 1 and at most 16)."""

    timing: TimingConfig = TimingConfig()
    timeout_s: float = 60.0
    compile_timeout_s: float = 600.0
    compile_workers: int | None = None


# A task a benchmark worker runs for one candidate: ``fn(begin, problem, choice, *args)``.
Task = tuple[Callable[..., Any], tuple[Any, ...]]


class Bench:
    """Owns the worker processes: a compile pool and one benchmark worker per device.

    ``devices(device)`` lists the devices whose workers measure a problem on ``device``
    (default ``devices.worker_devices``); a device listed several times gets several
    workers, named ``device#k``. A worker on another GPU than the problem's is pinned to
    it (``devices.pinned_env``): there the problem's device index names that GPU.
    """

    def __init__(self, devices: Callable[[str], Sequence[str]] | None = None) -> None:
        self._devices = devices or worker_devices
        self._compile_workers: list[Worker] = []
        self._bench_workers: dict[str, Worker] = {}
        self._lock = threading.Lock()

    def worker_slots(self, device: str) -> list[tuple[str, dict[str, str]]]:
        """``(worker name, environment settings)`` of each benchmark worker for a problem
        on ``device`` (``"cuda:N"``, or any device string that names no CUDA index)."""
        devices = list(self._devices(device)) or [device]
        home = device_index(device)
        repeated = Counter(devices)
        seen: Counter[str] = Counter()
        slots = []
        for d in devices:
            name = f"{d}#{seen[d]}" if repeated[d] > 1 else d
            seen[d] += 1
            gpu = device_index(d)
            env = pinned_env(home, gpu) if home is not None and gpu is not None else {}
            slots.append((name, env))
        return slots

    def bench_worker(self, name: str, env: dict[str, str] | None = None) -> Worker:
        """The benchmark worker called ``name`` with ``env`` set (see ``worker_slots``),
        created on first use."""
        key = f"{name} {sorted((env or {}).items())}"
        with self._lock:
            if key not in self._bench_workers:
                self._bench_workers[key] = Worker(env)
            return self._bench_workers[key]

    def _compile_pool(self, size: int) -> list[Worker]:
        with self._lock:
            while len(self._compile_workers) < size:
                self._compile_workers.append(Worker())
            return self._compile_workers[:size]

    def run(
        self,
        problem: measure.Problem,
        labels: Sequence[str],
        choices: Sequence[Any],
        config: BenchConfig,
        task: Task,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Build every choice and run ``task`` on each built one: one ``Outcome`` per
        choice, in the order of ``choices`` whatever the order they finished in.

        Builds run in the compile pool; each built choice is queued at once, and every
        benchmark worker takes the next queued choice whenever it is free, so each
        choice runs exactly once, on one worker, while later ones still build.
        ``on_done`` is called with each outcome as it is known, one call at a time.
        """
        slots = self.worker_slots(problem.layout.device)[: max(1, len(choices))]
        outcomes: list[Outcome | None] = [None] * len(choices)
        ready: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        finished = threading.Lock()

        def finish(i: int, outcome: Outcome) -> None:
            with finished:
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(outcome)

        todo = []
        for i, choice in enumerate(choices):
            if isinstance(choice, ExternChoice):
                ready.put((i, choice))  # nothing to build: first in the queue
            else:
                todo.append(i)

        def bench_loop(name: str, env: dict[str, str]) -> None:
            worker = self.bench_worker(name, env)
            try:
                worker.start()  # its start-up overlaps the first builds
            except WorkerFailure:
                pass  # the first call starts it again and reports why it fails
            while (item := ready.get()) is not None:
                i, choice = item
                outcome = _run_task(worker, problem, labels[i], choice, config, task)
                finish(i, replace(outcome, worker=name))

        size = config.compile_workers or min(16, (os.cpu_count() or 1) - len(slots))
        idle: queue.Queue[Worker] = queue.Queue()
        for w in self._compile_pool(max(1, min(size, len(todo)))):
            idle.put(w)

        def build(i: int) -> None:
            worker = idle.get()
            try:
                built = _build(worker, labels[i], choices[i], config)
            finally:
                idle.put(worker)
            if isinstance(built, Outcome):
                finish(i, built)
            else:
                ready.put((i, built))

        with ThreadPoolExecutor(max_workers=len(slots)) as bench_pool:
            loops = [bench_pool.submit(bench_loop, name, env) for name, env in slots]
            try:
                if todo:
                    with ThreadPoolExecutor(max_workers=idle.qsize()) as compile_pool:
                        list(compile_pool.map(build, todo))
            finally:
                for _ in slots:
                    ready.put(None)  # after every queued choice: the loops drain the queue
            for loop in loops:
                loop.result()
        missing = [labels[i] for i, o in enumerate(outcomes) if o is None]
        assert not missing, f"no outcome for {missing}"
        return [o for o in outcomes if o is not None]

    def close(self) -> None:
        with self._lock:
            workers = [*self._compile_workers, *self._bench_workers.values()]
            self._compile_workers.clear()
            self._bench_workers.clear()
        for w in workers:
            w.close()


def _build(worker: Worker, label: str, choice: Any, config: BenchConfig) -> Any | Outcome:
    """Build ``choice`` in a compile worker: the built choice, or a failed ``Outcome``."""
    try:
        built = worker.call(measure.compile_choice, choice, timeout_s=config.compile_timeout_s)
    except TaskError as exc:
        return Outcome(label, reason=COMPILE, detail=str(exc))
    except WorkerCrashed as exc:
        return Outcome(label, reason=COMPILE, detail=f"build process {exc}")
    except WorkerTimeout as exc:
        return Outcome(label, reason=COMPILE, detail=f"build timed out: {exc}")
    except Exception as exc:  # outside the task: it does not pickle, or a worker won't start
        return Outcome(label, reason=COMPILE, detail=f"build not run: {_text(exc)}")
    return choice if built is None else built


def _run_task(
    worker: Worker,
    problem: measure.Problem,
    label: str,
    choice: Any,
    config: BenchConfig,
    task: Task,
) -> Outcome:
    """Run ``task`` on ``choice`` in a benchmark worker; its ``Outcome``."""
    fn, args = task
    try:
        result = worker.call(
            fn,
            problem,
            choice,
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
    except Exception as exc:  # outside the task: it does not pickle, or a worker won't start
        return Outcome(label, reason=ERROR, detail=f"measurement not run: {_text(exc)}")
    return Outcome(label, time_ms=None if result is None else float(result))


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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

    Call it after a burst of selections to return the benchmark workers' device
    memory and CUDA contexts; it is also done at interpreter exit.
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
    """Build, check and time every choice (``Bench.run``); one ``Outcome`` per choice,
    in order, each carrying the worker that measured it. ``progress`` gets a step per
    choice as it finishes."""
    bench = bench or shared_bench()

    def report(outcome: Outcome) -> None:
        progress.step(
            outcome.label, f"{outcome.time_ms:.4f} ms" if outcome.ok else outcome.reason or ""
        )

    try:
        return bench.run(
            problem, labels, choices, config, (measure.measure, (config.timing,)), report
        )
    finally:
        progress.close()


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
    return bench.run(problem, labels, choices, config, (measure.check, ()))


def worker_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """How many of ``outcomes`` each benchmark worker ran, by worker name."""
    return dict(Counter(o.worker for o in outcomes if o.worker is not None))
