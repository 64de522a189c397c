"""The task a benchmark worker runs for one candidate: build, check against extern, time.

Runs inside ``tilefuse_autotune.worker``. Every candidate gets fresh inputs (so a
kernel that scribbles on its inputs cannot mislead the next), copied on the device from
pristine ones drawn from ``seed`` once per problem, on the problem's GPU: drawing them on
the CPU took seconds for an 8192x8192 GEMM. The pristine
inputs and the extern reference output are kept in this process for the last problem,
with a fingerprint of their bytes: a candidate that writes outside its own buffers and
changes them fails (``WrongResult``) and they are made again for the next one.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from tilefuse import plugin

from .devices import device_index, device_type
from .extern import ExternChoice
from .timing import TimingConfig, median_ms, sustained_ms

log = logging.getLogger("tilefuse.autotune")

# Allowed max |out - ref| / max(1, max |ref|), by output dtype. Loose enough for
# TF32 and reduced-precision accumulation orders, tight enough to catch a wrong kernel.
TOLERANCE = {"float32": 1e-2, "float64": 1e-6, "float16": 1e-2, "bfloat16": 5e-2}
DEFAULT_TOLERANCE = 1e-2


class WrongResult(Exception):
    """The candidate's output differs from the extern reference."""


@dataclass(frozen=True)
class Problem:
    """What every candidate computes: picklable, identical for all of them."""

    op: str
    inputs: tuple[plugin.TensorSpec, ...]
    layout: plugin.TensorSpec
    epilogue: plugin.Epilogue
    seed: int = 0
    # Whether float32 matmuls may use TF32, as in the selecting process (``keys.tf32_matmuls``):
    # a worker runs the vendor library as the graph will.
    tf32: bool = False

    def make_inputs(self) -> list[Any]:
        """The problem's inputs from ``seed``, drawn on its GPU when it has one (an 8192x8192
        operand took seconds to draw on the CPU, ahead of the first measurement)."""
        import torch

        device = self.layout.device if device_type(self.layout.device) == "cuda" else "cpu"
        generator = torch.Generator(device=device).manual_seed(self.seed)
        return [spec.random(generator) for spec in self.inputs]


# problem, extern's output, the inputs it ran on, their fingerprint
_reference: tuple[Problem, Any, list[Any], tuple[int, ...]] | None = None


def _fingerprint(tensors: Sequence[Any]) -> tuple[int, ...]:
    """An exact summary of each tensor's bytes (its elements read as integers of the same
    width, summed in int64): any change to the values a tensor holds changes it, short
    of changes that cancel out, which a stray write does not make."""
    import torch

    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return tuple(
        int(torch.sum(t.view(as_int[t.element_size()]), dtype=torch.int64).item()) for t in tensors
    )


def _reference_output(problem: Problem) -> Any:
    return _pristine(problem)[1]


def _pristine(problem: Problem) -> tuple[Problem, Any, list[Any], tuple[int, ...]]:
    """``(problem, extern's output, the inputs it ran on, their fingerprint)``, made once
    per problem."""
    global _reference
    if _reference is None or _reference[0] != problem:
        _reference = None  # free the last problem's tensors before making these
        inputs = problem.make_inputs()
        out = problem.layout.empty()
        ExternChoice(problem.op, problem.epilogue).run(*inputs, out=out)
        _reference = (problem, out, inputs, _fingerprint([out, *inputs]))
    return _reference


def _check_pristine_unchanged(problem: Problem) -> None:
    """Raise ``WrongResult`` (and drop them, to be made again) when the kept reference or
    pristine inputs changed since they were made: the candidate that just ran wrote
    outside its own buffers (they share the device's memory with it)."""
    global _reference
    if _reference is None or _reference[0] != problem:
        return
    _, out, inputs, fingerprint = _reference
    if _fingerprint([out, *inputs]) != fingerprint:
        _reference = None
        raise WrongResult(
            "the candidate wrote outside its output and inputs: the kept reference output "
            "or pristine inputs changed while it ran (an out-of-bounds store)"
        )


def fresh_inputs(problem: Problem) -> list[Any]:
    """Copies of the problem's pristine inputs, in the layouts its specs give."""
    pristine = _pristine(problem)[2]
    fresh = [spec.empty() for spec in problem.inputs]
    for target, source in zip(fresh, pristine):
        target.copy_(source)
    return fresh


def check_close(out: Any, ref: Any, dtype: str) -> None:
    """Raise ``WrongResult`` unless ``out`` matches ``ref`` within the dtype's tolerance."""
    import torch

    got, want = out.double(), ref.double()
    if got.shape != want.shape:
        raise WrongResult(f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    if got.numel() == 0:
        return
    if not torch.equal(torch.isnan(got), torch.isnan(want)):
        raise WrongResult("NaN where the reference has none (or the reverse)")
    finite = ~torch.isnan(want)
    err = (got[finite] - want[finite]).abs().max().item() if finite.any() else 0.0
    scale = max(1.0, want[finite].abs().max().item() if finite.any() else 0.0)
    tol = TOLERANCE.get(dtype, DEFAULT_TOLERANCE)
    if not err <= tol * scale:
        raise WrongResult(f"max error {err:.3g} exceeds {tol:g} x {scale:.3g}")


def _use_device(problem: Problem) -> None:
    """Make the problem's device current in this worker (a bare ``"cuda"`` keeps the current
    one), so that what runs without naming a device (the L2 flush, the kernels' streams)
    runs there; and let float32 matmuls use TF32 exactly when the selecting process does."""
    import torch

    index = device_index(problem.layout.device)
    if index is not None:
        torch.cuda.set_device(index)
    if device_type(problem.layout.device) == "cuda":
        try:
            plugin.set_tf32_matmuls(problem.tf32)
        except Exception as exc:  # measuring with torch's own setting beats not measuring
            log.warning("tilefuse: could not set TF32 to %s for the measurement: %s",
                        problem.tf32, exc)  # fmt: skip


def _checked_run(
    begin: Callable[[], None],
    problem: Problem,
    choice: plugin.Choice,
    phases: dict[str, float] | None = None,
) -> tuple[Sequence[Any], Any]:
    """Build, run once, compare with extern; returns the inputs and output it used.
    ``phases`` (when given) gets the seconds of each step, for the worker's debug log."""
    import torch

    cuda = device_type(problem.layout.device) == "cuda"
    clock = _PhaseClock(phases, cuda)
    _use_device(problem)
    ref = _reference_output(problem)
    inputs: Sequence[Any] = fresh_inputs(problem)
    out = problem.layout.empty()
    if out.dtype.is_floating_point:
        out.fill_(float("nan"))  # a kernel that writes nothing must not pass
    clock.lap("inputs")
    choice.compile()  # cheap here: the build ran in the compile pool and is cached
    clock.lap("compile")
    begin()
    choice.run(*inputs, out=out)
    if cuda:
        torch.cuda.synchronize()
    clock.lap("first run")
    _check_pristine_unchanged(problem)  # first: a changed reference would misname the fault
    check_close(out, ref, problem.layout.dtype)
    clock.lap("check")
    return inputs, out


class _PhaseClock:
    """Seconds between laps into ``phases`` (nothing when it is ``None``); on CUDA each lap
    first waits for the device, so a step's queued work counts in that step."""

    def __init__(self, phases: dict[str, float] | None, cuda: bool) -> None:
        self.phases, self.cuda = phases, cuda
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.phases is None:
            return
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        self.phases[name] = now - self.last
        self.last = now


def check(begin: Callable[[], None], problem: Problem, choice: plugin.Choice) -> None:
    """Worker task: run the candidate once; raises ``WrongResult`` unless it matches extern."""
    _checked_run(begin, problem, choice)
    _release_device_memory()


def measure(
    begin: Callable[[], None],
    problem: Problem,
    choice: plugin.Choice,
    timing: TimingConfig,
    best_ms: float | None = None,
) -> float:
    """Worker task: the candidate's median time in ms; raises ``WrongResult`` if wrong.

    ``best_ms``: the best time measured so far in this selection; a candidate whose first
    runs take more than ``timing.screen_margin`` times it is not measured further
    (``TimingConfig``)."""
    device = problem.layout.device
    phases: dict[str, float] | None = {} if log.isEnabledFor(logging.DEBUG) else None
    started = time.perf_counter()
    inputs, out = _checked_run(begin, problem, choice, phases)
    checked = time.perf_counter()
    cutoff = None if best_ms is None else best_ms * timing.screen_margin
    ms = median_ms(partial(choice.run, *inputs, out=out), device, timing, cutoff)
    timed = time.perf_counter()
    _check_pristine_unchanged(problem)  # the timed runs may write where the first did not
    del inputs, out
    _release_device_memory()
    screened = " (screened out)" if cutoff is not None and ms > cutoff else ""
    steps = ", ".join(f"{k} {v:.3f}" for k, v in (phases or {}).items())
    log.debug("%s: %.3f ms; build and check %.2f s (%s), timing %.2f s, cleanup %.2f s%s",
              getattr(choice, "name", "?"), ms, checked - started, steps, timed - checked,
              time.perf_counter() - timed, screened)  # fmt: skip
    return ms


def sustained(
    begin: Callable[[], None],
    problem: Problem,
    choices: Sequence[plugin.Choice],
    expected_ms: Sequence[float],
) -> list[float]:
    """Worker task: ``choices``' times per run in ms, compared in one sustained,
    interleaved loop (``timing.sustained_ms``), each on its own fresh inputs; raises
    ``WrongResult`` when one no longer matches extern."""
    runs = [_checked_run(begin, problem, choice) for choice in choices]
    fns = [partial(choice.run, *inputs, out=out) for choice, (inputs, out) in zip(choices, runs)]
    times = sustained_ms(fns, problem.layout.device, expected_ms)
    _check_pristine_unchanged(problem)
    del runs, fns
    _release_device_memory()
    return times


def build_all(begin: Callable[[], None], choices: Sequence[plugin.Choice]) -> list[str | None]:
    """Worker task: build ``choices`` (each ``thread_safe_build``) on threads of this
    process, so that its own measurements find them built; per choice ``None`` (built) or
    why its build failed. A build that ran out of device memory (builds on many threads at
    once each hold their scratch tensors) is tried again alone afterwards."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    begin()
    started = time.perf_counter()

    def build(choice: plugin.Choice) -> Exception | None:
        try:
            choice.compile()
        except Exception as exc:
            return exc
        return None

    threads = max(1, min(len(choices), os.cpu_count() or 1, 16))
    with ThreadPoolExecutor(threads, thread_name_prefix="tilefuse-build") as pool:
        failures = list(pool.map(build, choices))
    for k, failure in enumerate(failures):
        if failure is not None and _out_of_memory(failure):
            _release_device_memory()
            failures[k] = build(choices[k])
    log.debug("built %d choices on %d threads in %.2f s", len(choices), threads,
              time.perf_counter() - started)  # fmt: skip
    return [None if f is None else f"{type(f).__name__}: {f}" for f in failures]


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is a device out-of-memory error."""
    seen: BaseException | None = exc
    for _ in range(16):  # a chain is short; a pathological one may loop
        if seen is None:
            return False
        if type(seen).__name__ == "OutOfMemoryError" or "out of memory" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _release_device_memory() -> None:
    """Hand cached device memory back: the worker outlives the selection, and builds or
    other processes may need it."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_builds_here = 0  # builds this compile worker ran, for the debug log


def compile_choice(begin: Callable[[], None], choice: plugin.Choice) -> plugin.Choice | None:
    """Worker task: build ``choice``; return it with the state the build recorded.

    Returns ``None`` when the built choice no longer pickles (it holds a loaded
    module, say): the caller keeps its own copy, which rebuilds from the provider's
    cache when the benchmark worker calls ``compile()`` again.
    """
    global _builds_here
    begin()
    started = time.perf_counter()
    choice.compile()
    _builds_here += 1
    log.debug("%s: built in %.2f s (build %d of this worker)", getattr(choice, "name", "?"),
              time.perf_counter() - started, _builds_here)  # fmt: skip
    try:
        pickle.dumps(choice)
    except Exception:
        return None
    return choice
