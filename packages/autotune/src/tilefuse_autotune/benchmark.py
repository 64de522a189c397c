"""Compiling candidates in parallel and benchmarking them in isolated processes, one per GPU.

Every candidate costs at most itself: a build or run that raises, crashes its
process, hangs past its limit or computes a wrong result becomes a failed
``Outcome`` with a reason, and the next candidate runs in a fresh worker when the
old one died.

Builds and measurements overlap: a compile pool builds the candidates while one
benchmark worker per device (``devices.worker_devices``: the compiling GPU and every
other local GPU of the same model) takes each built candidate as soon as it is ready.
The extern choice needs no build and is queued first; slow builds (``slow_build`` choices
whose artifact is not cached) start once every quick one is built, are waited for only
``BenchConfig.build_wait_s`` and may go on in the background (``Bench.run``).
Choices with ``thread_safe_build`` (Triton templates) skip the pool: each benchmark worker
builds them all on its own threads before it measures, so only one process per GPU starts
CUDA for them. Workers fork from the zygote (``zygote``) where it runs.
Each worker is pinned to its GPU
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
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from . import measure
from .devices import device_index, pinned_env, worker_devices
from .extern import ExternChoice
from .progress import Progress
from .timing import TimingConfig
from .worker import (
    CHILD_CWD,
    TaskError,
    Worker,
    WorkerCrashed,
    WorkerFailure,
    WorkerTimeout,
    child_env,
    mark_exiting,
)
from .zygote import Zygote
from .zygote import enabled as zygote_enabled

log = logging.getLogger("tilefuse.autotune")

# Failure reasons, in the order the summary lists them.
COMPILE = "compile error"
CRASH = "crash"
TIMEOUT = "timeout"
WRONG = "wrong result"
ERROR = "run error"
PENDING = "still building"
REASONS = (COMPILE, CRASH, TIMEOUT, WRONG, ERROR, PENDING)


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
    core per benchmark worker, which runs at the same time, at least 1 and at most 16).

    ``build_wait_s``: seconds from the start of a run after which the builds of
    ``slow_build`` choices are no longer waited for (``None``: wait for every build). Such a
    build still running once every other choice is measured and the time is up becomes a
    ``PENDING`` outcome and goes on in the background (``Bench.run``)."""

    timing: TimingConfig = TimingConfig()
    timeout_s: float = 60.0
    compile_timeout_s: float = 600.0
    compile_workers: int | None = None
    build_wait_s: float | None = None


# A task a benchmark worker runs for one candidate: ``fn(begin, problem, choice, *args)``;
# ``args`` may be a callable that makes them when the candidate is handed to a worker.
Task = tuple[Callable[..., Any], tuple[Any, ...] | Callable[[], tuple[Any, ...]]]


@dataclass(frozen=True)
class BenchRun:
    """What one ``Bench.run`` found: ``outcomes``, one per choice in the order of the
    choices, and ``quick_builds_s``, seconds from the run's start until every quick (not
    slow-build) choice was built: a diagnostic for the selection's summary line.

    It belongs to the run, not to the ``Bench``: selections on several threads share one
    ``Bench`` and each reads only its own run's figure."""

    outcomes: list[Outcome]
    quick_builds_s: float


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
        self._busy: set[int] = set()  # id() of compile workers running a build
        self._background: dict[str, Future[None]] = {}  # slow builds by build key
        self._bench_workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None  # forks the workers (``zygote``), made on first use

    def zygote(self) -> Zygote | None:
        """The zygote this bench's workers fork from, started in the background on the
        first call; ``None`` when ``TILEFUSE_WORKER_ZYGOTE=0`` or the platform cannot fork."""
        with self._lock:
            if self._zygote is None and zygote_enabled():
                self._zygote = Zygote(env=child_env(os.environ), cwd=CHILD_CWD)
            zygote = self._zygote
        if zygote is not None:
            zygote.start()
        return zygote

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
            worker = self._bench_workers.get(key)
        if worker is None:
            zygote = self.zygote()
            with self._lock:
                worker = self._bench_workers.setdefault(key, Worker(env, zygote))
        return worker

    def _compile_pool(self, size: int) -> list[Worker]:
        """``size`` compile workers that no build (a background one included) is using."""
        zygote = self.zygote()
        with self._lock:
            free = [w for w in self._compile_workers if id(w) not in self._busy][:size]
            while len(free) < size:
                worker = Worker(zygote=zygote)
                self._compile_workers.append(worker)
                free.append(worker)
            return free

    def _mark_busy(self, worker: Worker, busy: bool) -> None:
        with self._lock:
            (self._busy.add if busy else self._busy.discard)(id(worker))

    def still_building(self, choices: Sequence[Any]) -> bool:
        """Whether a background build of any of ``choices`` (by build key) is running."""
        keys = {_build_key(c) for c in choices}
        with self._lock:
            return any(k in self._background for k in keys if k is not None)

    def run(
        self,
        problem: measure.Problem,
        labels: Sequence[str],
        choices: Sequence[Any],
        config: BenchConfig,
        task: Task,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> BenchRun:
        """Build every choice and run ``task`` on each built one: a ``BenchRun`` with one
        ``Outcome`` per choice, in the order of ``choices`` whatever the order they
        finished in, and the time the quick builds took.

        Builds run in the compile pool, slow ones (uncached ``slow_build``) only once every
        quick one is built, so that an nvcc build never holds up a quick one (and, when
        ``config.build_wait_s`` is 0, only once every other choice is measured); each built
        choice is queued at once, and every benchmark worker takes the next queued choice
        whenever it is free, so each choice runs exactly once, on one worker, while later
        ones still build.
        ``on_done`` is called with each outcome as it is known, one call at a time.

        With ``config.build_wait_s`` set, a ``slow_build`` choice (not ``build_cached()``)
        whose build is still
        running when every other choice is done and that many seconds have passed since
        the start gets a ``PENDING`` outcome; its build goes on in the background (in a
        compile worker no later run uses until it ends) and publishes its artifact to the
        provider's cache. A slow choice whose artifact is already being built in the
        background (same ``build_key()``) waits for that build instead of starting another.
        """
        start = time.monotonic()

        def since() -> float:  # for the debug log's timeline of this run
            return time.monotonic() - start

        slots = self.worker_slots(problem.layout.device)[: max(1, len(choices))]
        outcomes: list[Outcome | None] = [None] * len(choices)
        ready: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        state = threading.Lock()  # guards outcomes, queued and given_up
        queued: set[int] = set()
        given_up: set[int] = set()

        def finish(i: int, outcome: Outcome) -> None:
            with state:
                if outcomes[i] is not None:
                    return
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(outcome)

        fast: list[int] = []
        slow: list[int] = []
        here: list[int] = []  # built on threads of each benchmark worker (``_builds_in_worker``)
        for i, choice in enumerate(choices):
            if isinstance(choice, ExternChoice):
                ready.put((i, choice))  # nothing to build: first in the queue
                queued.add(i)
            elif _slow_uncached(choice):
                slow.append(i)
            else:
                (here if _builds_in_worker(choice) else fast).append(i)
        built_here = threading.Event()  # the ``here`` choices are queued, failed or handed on
        here_settled = [not here]  # under ``state``: their fate is decided
        here_to_pool: list[int] = []  # their worker died building them: build each alone
        if not here:
            built_here.set()

        def settle_here(errors: Sequence[str | None] | None) -> None:
            """Queue each built ``here`` choice and fail the others, or with ``None`` hand
            them all to the compile pool; only the first call acts."""
            with state:
                if here_settled[0]:
                    return
                here_settled[0] = True
            if errors is None:
                here_to_pool.extend(here)
                built_here.set()
                return
            for i, error in zip(here, errors):
                if error is not None:
                    finish(i, Outcome(labels[i], reason=COMPILE, detail=error))
                else:
                    with state:
                        queued.add(i)
                    ready.put((i, choices[i]))
            built_here.set()

        def build_in(worker: Worker, name: str) -> None:
            """Build the ``here`` choices on the worker's threads; the first worker done
            queues each built one (every worker builds them all: it measures any of them)."""
            errors: list[str | None] | None
            try:
                errors = worker.call(measure.build_all, [choices[i] for i in here],
                                     timeout_s=config.compile_timeout_s)  # fmt: skip
            except WorkerFailure as exc:
                # One build crashed or hung the worker: which one is unknown, so each is
                # built alone in the compile pool, where only the bad one fails.
                log.info("tilefuse: building %d choices in benchmark worker %s failed (%s); "
                         "building each in a compile worker",
                         len(here), name, _text(exc))  # fmt: skip
                errors = None
            except Exception as exc:  # the call could not be made: it does not pickle, say
                errors = [f"build not run: {_text(exc)}"] * len(here)
            log.debug("autotune timeline: +%.2f s: %d choices built in benchmark worker %s",
                      since(), len(here), name)  # fmt: skip
            settle_here(errors)

        def bench_loop(name: str, env: dict[str, str]) -> None:
            worker = self.bench_worker(name, env)
            try:
                worker.start()  # its start-up overlaps the first builds
            except WorkerFailure:
                pass  # the first call starts it again and reports why it fails
            log.debug("autotune timeline: +%.2f s: benchmark worker %s ready", since(), name)
            if here:
                build_in(worker, name)
            while (item := ready.get()) is not None:
                i, choice = item
                outcome = _run_task(worker, problem, labels[i], choice, config, task)
                log.debug("autotune timeline: +%.2f s: %s measured on %s", since(), labels[i],
                          name)  # fmt: skip
                finish(i, replace(outcome, worker=name))

        todo = fast + slow
        size = max(1, config.compile_workers or min(16, (os.cpu_count() or 1) - len(slots)))
        idle: queue.Queue[Worker] = queue.Queue()
        for w in self._compile_pool(min(size, len(todo) + len(here))) if todo or here else ():
            idle.put(w)
        keys = {i: _build_key(choices[i]) for i in slow}
        slow_set = set(slow)
        with self._lock:
            running = {i: self._background.get(k) for i, k in keys.items() if k is not None}

        quick_started = threading.Event()  # slow builds never hold a worker a quick one needs
        quick_builds_s = 0.0
        # Slow builds nobody waits for start once every measurement is done: the cores
        # go to the quick builds and the measurements the selection does wait for.
        defer_slow = config.build_wait_s is not None and config.build_wait_s <= 0
        measured = threading.Event()

        def build(i: int) -> None:
            if i in slow_set:
                quick_started.wait()
                if defer_slow:
                    measured.wait()
            other = running.get(i)
            if other is not None:
                wait([other])  # the same artifact is being built: then a cache hit
                with state:
                    if i in given_up:
                        return  # nothing to build any more, nobody waits for it
            worker = idle.get()
            self._mark_busy(worker, True)
            began = since()
            try:
                built = _build(worker, labels[i], choices[i], config)
            finally:
                self._mark_busy(worker, False)
                idle.put(worker)
            log.debug("autotune timeline: +%.2f s: %s built (%.2f s in a compile worker)",
                      since(), labels[i], since() - began)  # fmt: skip
            with state:
                if i in given_up:
                    return  # the run moved on; the artifact is in the cache now
                if not isinstance(built, Outcome):
                    queued.add(i)
            if isinstance(built, Outcome):
                finish(i, built)
            else:
                ready.put((i, built))

        def forget(key: str, future: Future[None]) -> None:
            with self._lock:
                if self._background.get(key) is future:
                    del self._background[key]

        try:
            with ThreadPoolExecutor(max_workers=len(slots)) as bench_pool:
                loops = [bench_pool.submit(bench_loop, name, env) for name, env in slots]
                for loop in loops:  # a loop that ends early must not leave the wait below
                    loop.add_done_callback(lambda _: built_here.set())
                try:
                    futures = {i: _start_daemon(build, i) for i in todo}
                    for i in slow:
                        key = keys[i]
                        if key is not None and running.get(i) is None:
                            with self._lock:
                                self._background.setdefault(key, futures[i])
                            futures[i].add_done_callback(partial(forget, key))
                    wait([futures[i] for i in fast])
                    built_here.wait()
                    # every benchmark loop ended before building them (it could not start)
                    settle_here(["its benchmark worker ended before building it"] * len(here))
                    wait([_start_daemon(build, i) for i in here_to_pool])
                    quick_started.set()
                    quick_builds_s = time.monotonic() - start
                    if slow and config.build_wait_s is not None:
                        left = start + config.build_wait_s - time.monotonic()
                        wait([futures[i] for i in slow], timeout=max(0.0, left))
                        self._give_up(slow, labels, outcomes, queued, given_up, state, on_done)
                    else:
                        wait([futures[i] for i in slow])
                finally:
                    quick_started.set()
                    for _ in slots:
                        ready.put(None)  # after every queued choice: the loops drain the queue
                for loop in loops:
                    loop.result()
        finally:
            measured.set()  # whatever ended the run (an interrupt too): no build waits forever
        missing = [labels[i] for i, o in enumerate(outcomes) if o is None]
        assert not missing, f"no outcome for {missing}"
        return BenchRun([o for o in outcomes if o is not None], quick_builds_s)

    @staticmethod
    def _give_up(
        slow: Sequence[int],
        labels: Sequence[str],
        outcomes: list[Outcome | None],
        queued: set[int],
        given_up: set[int],
        state: threading.Lock,
        on_done: Callable[[Outcome], None] | None,
    ) -> None:
        """Mark each slow build that is neither finished nor queued as ``PENDING``."""
        with state:
            for i in slow:
                if outcomes[i] is None and i not in queued:
                    given_up.add(i)
                    pending = Outcome(
                        labels[i],
                        reason=PENDING,
                        detail="its build goes on in the background; a later max-mode "
                        "selection measures it (TILEFUSE_AUTOTUNE_BUILD_WAIT_S sets how long "
                        "to wait)",
                    )
                    outcomes[i] = pending
                    if on_done is not None:
                        on_done(pending)

    def close_at_exit(self) -> None:
        """Stop this bench's workers when the interpreter exits, and before that stop any
        worker from starting a process (a background build thread may still wake)."""
        atexit.register(self.close)
        atexit.register(mark_exiting)  # registered last, so it runs first

    def close(self, keep_zygote: bool = False) -> None:
        """Stop the workers (background builds included) and, unless ``keep_zygote``, the
        zygote: it holds no GPU memory, so ``release_workers`` keeps it for the next
        selection."""
        with self._lock:
            workers = [*self._compile_workers, *self._bench_workers.values()]
            building = len(self._background)
            self._compile_workers.clear()
            self._bench_workers.clear()
            self._busy.clear()
            self._background.clear()
            zygote = None if keep_zygote else self._zygote
            self._zygote = self._zygote if keep_zygote else None
        if building:
            log.info("tilefuse: stopping %d unfinished background build(s)", building)
        for w in workers:
            w.close()
        if zygote is not None:
            zygote.close()


def _start_daemon(fn: Callable[..., None], *args: Any) -> Future[None]:
    """Run ``fn(*args)`` on a daemon thread; its ``Future``. A build left running in the
    background must not keep the interpreter from exiting: ``ThreadPoolExecutor`` threads
    are joined at exit before ``atexit`` runs ``Bench.close``, which stops the builds."""
    future: Future[None] = Future()

    def body() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            fn(*args)
        except BaseException as exc:  # a bug of this module: nobody reads the future's result
            log.exception("tilefuse: an autotune build thread failed")
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=body, name="tilefuse-autotune-build", daemon=True).start()
    return future


def _builds_in_worker(choice: Any) -> bool:
    """A choice whose ``compile()`` may run on several threads at once
    (``thread_safe_build``): built in the benchmark workers, not in the compile pool."""
    return bool(getattr(choice, "thread_safe_build", False))


def _slow_uncached(choice: Any) -> bool:
    """A ``slow_build`` choice whose artifact is not cached yet (``build_cached()``)."""
    if not getattr(choice, "slow_build", False):
        return False
    cached = getattr(choice, "build_cached", None)
    try:
        return not (callable(cached) and cached())
    except Exception:
        return True


def _build_key(choice: Any) -> str | None:
    """``choice.build_key()`` when it has one and it answers (else ``None``)."""
    method = getattr(choice, "build_key", None)
    if not callable(method):
        return None
    try:
        return str(method())
    except Exception:
        return None


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
    if callable(args):
        args = args()
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
        _shared.close_at_exit()
    return _shared


def release_workers() -> None:
    """Stop the process-wide worker processes now (a later selection starts fresh ones).

    Call it after a burst of selections to return the benchmark workers' device
    memory and CUDA contexts; it is also done at interpreter exit. The zygote, which
    holds no GPU memory, stays until exit, so the fresh workers still start in milliseconds.
    """
    if _shared is not None:
        _shared.close(keep_zygote=True)


def run_benchmarks(
    problem: measure.Problem,
    labels: Sequence[str],
    choices: Sequence[Any],
    config: BenchConfig,
    progress: Progress,
    bench: Bench | None = None,
) -> BenchRun:
    """Build, check and time every choice (``Bench.run``): the run's ``BenchRun``, one
    ``Outcome`` per choice, in order, each carrying the worker that measured it.
    ``progress`` gets a step per choice as it finishes.
    Each candidate is screened against the best time measured before it is handed to a
    worker (``TimingConfig``): a sure loser gets a short measurement, not a full one."""
    bench = bench or shared_bench()
    best: list[float] = []  # the best time so far: later candidates are screened against it

    def report(outcome: Outcome) -> None:
        progress.step(
            outcome.label, f"{outcome.time_ms:.4f} ms" if outcome.ok else outcome.reason or ""
        )
        if outcome.ok and outcome.time_ms is not None and (not best or outcome.time_ms < best[0]):
            best[:] = [outcome.time_ms]

    try:
        return bench.run(
            problem,
            labels,
            choices,
            config,
            (measure.measure, lambda: (config.timing, best[0] if best else None)),
            report,
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
    return bench.run(problem, labels, choices, config, (measure.check, ())).outcomes


def sustained_times(
    problem: measure.Problem,
    choices: Sequence[Any],
    expected_ms: Sequence[float],
    config: BenchConfig,
    bench: Bench | None = None,
) -> tuple[list[float] | None, str | None]:
    """``choices``' times compared in one sustained loop (``measure.sustained``) on the
    benchmark worker of the problem's own device: ``(times, None)``, or ``(None, why)``
    when it failed (``why`` starts with ``WrongResult`` when a choice's output no longer
    matched extern)."""
    bench = bench or shared_bench()
    name, env = bench.worker_slots(problem.layout.device)[0]
    try:
        times = bench.bench_worker(name, env).call(
            measure.sustained,
            problem,
            list(choices),
            list(expected_ms),
            timeout_s=config.timeout_s,
            prepare_timeout_s=config.compile_timeout_s,
        )
    except Exception as exc:
        why = str(exc) if isinstance(exc, TaskError) else _text(exc)
        log.info("tilefuse: the sustained comparison did not run: %s", why)
        return None, why
    return times, None


def worker_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """How many of ``outcomes`` each benchmark worker ran, by worker name."""
    return dict(Counter(o.worker for o in outcomes if o.worker is not None))
