"""Picklable fake choices for ``op="mm"`` that each exercise one way a candidate ends.

They live in an importable module because the autotuner pickles them into its
worker processes.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

import torch

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed


class _Fake:
    provider = "fake"

    def __init__(self, name: str) -> None:
        self.name = name
        self.compiled = False

    def compile(self) -> None:
        self.compiled = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FastChoice(_Fake):
    """Correct, and faster than eager by a noise-proof margin: when handed the very
    same, unmodified tensors again, ``out`` still holds their product and it returns."""

    def __init__(self, name: str = "fast") -> None:
        super().__init__(name)
        self._memo: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memo": None}

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        key = (a.data_ptr(), a._version, b.data_ptr(), b._version)
        if self._memo == (key, (out.data_ptr(), out._version)):
            return
        torch.mm(a, b, out=out)
        self._memo = (key, (out.data_ptr(), out._version))


class SlowChoice(_Fake):
    """Correct, and far slower than eager: it does the whole product 10 times."""

    def __init__(self, name: str = "slow") -> None:
        super().__init__(name)

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        for _ in range(10):
            torch.mm(a, b, out=out)


class WrongChoice(_Fake):
    """Fast and wrong: it computes ``a @ b + 1``."""

    def __init__(self, name: str = "wrong") -> None:
        super().__init__(name)

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        torch.mm(a, b, out=out)
        out.add_(1.0)


class CrashChoice(_Fake):
    """Kills its process the way a segfaulting kernel would (``os.abort``)."""

    def __init__(self, name: str = "crash") -> None:
        super().__init__(name)

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        os.abort()


class HangChoice(_Fake):
    """Never returns."""

    def __init__(self, name: str = "hang") -> None:
        super().__init__(name)

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        threading.Event().wait()


class BrokenBuildChoice(_Fake):
    """Its build fails the documented way."""

    def __init__(self, name: str = "broken-build") -> None:
        super().__init__(name)

    def compile(self) -> None:
        raise ChoiceFailed("fake build error: unsupported tile")

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        raise AssertionError("never built, never run")


class ZeroChoice(_Fake):
    """Fast and wrong: it writes zeros, whatever the inputs."""

    def __init__(self, name: str = "zero") -> None:
        super().__init__(name)

    def run(self, *inputs: Any, out: Any) -> None:
        out.zero_()


class SegfaultChoice(_Fake):
    """Reads address 0 through ctypes: the process dies of SIGSEGV, as a bad kernel would."""

    def __init__(self, name: str = "segfault") -> None:
        super().__init__(name)

    def run(self, *inputs: Any, out: Any) -> None:
        import ctypes

        ctypes.string_at(0)


class ReluChoice(_Fake):
    """Correct for ``mm`` with a fused ``relu`` epilogue."""

    def __init__(self, name: str = "relu") -> None:
        super().__init__(name)

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        torch.mm(a, b, out=out)
        out.relu_()


class FakeProvider:
    """A ``plugin.ChoiceProvider`` offering ``choices`` for ``mm`` on any device."""

    api_version = plugin.API_VERSION

    def __init__(self, name: str, choices: list[Any], version: str = "1.0") -> None:
        self.name = name
        self.version = version
        self._choices = choices

    def supports(self, op: str, device: str) -> bool:
        return op == "mm"

    def accepts(self, op, inputs, layout, epilogue):
        return plugin.Verdict.yes() if self._choices else plugin.Verdict.no(f"{self.name}: none")

    def choices(self, op, inputs, layout, epilogue):
        return list(self._choices)


def mm_problem(m: int = 96, k: int = 96, n: int = 96, device: str = "cpu"):
    """``(inputs, layout)`` specs of a float32 ``mm``."""
    a = plugin.TensorSpec((m, k), (k, 1), "float32", device)
    b = plugin.TensorSpec((k, n), (n, 1), "float32", device)
    out = plugin.TensorSpec((m, n), (n, 1), "float32", device)
    return (a, b), out


class RecordingChoice(_Fake):
    """Correct; appends ``"<pid> <name> <gpu>"`` to ``log`` at each run, so a test can count
    in which process, and how often, a candidate ran, and on which physical GPU (its UUID;
    ``-`` on the CPU). Raises unless its tensors are on the process's current device (a
    benchmark worker must make inputs on its own device)."""

    def __init__(self, name: str, log: str) -> None:
        super().__init__(name)
        self.log = log

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        if a.is_cuda:
            here = torch.device("cuda", torch.cuda.current_device())
            if {a.device, b.device, out.device} != {here}:
                raise RuntimeError(f"tensors on {a.device}/{b.device}/{out.device}, not {here}")
        torch.mm(a, b, out=out)
        gpu = str(torch.cuda.get_device_properties(a.device).uuid) if a.is_cuda else "-"
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {self.name} {gpu}\n")


def measure_by_name(
    begin: Any, problem: Any, choice: Any, timing: Any, best_ms: float | None = None
) -> float:
    """A benchmark worker task with deterministic timings: checks and times the candidate
    as the real task does, then reports the time its name states (``"ms2"`` and
    ``"ms2-b"``: 2.0 ms; any other name, extern's included: 5.0 ms)."""
    from tilefuse_autotune import measure

    measure.measure(begin, problem, choice, timing)
    name = choice.name
    return float(name[2:].split("-")[0]) if name.startswith("ms") else 5.0


class GatedBuildChoice(FastChoice):
    """A ``slow_build`` choice (an nvcc build, say) whose build waits until the file
    ``gate`` exists, then appends ``"<name>"`` to ``log``: a test opens the gate when it
    wants the build to end, and counts the builds that ran. Correct and fast once built.
    ``build_key()`` is ``key``: choices with equal keys share one artifact."""

    slow_build = True

    def __init__(self, name: str, gate: str, log: str, key: str = "") -> None:
        super().__init__(name)
        self.gate, self.log, self.key = gate, log, key or name

    def build_key(self) -> str:
        return self.key

    def build_cached(self) -> bool:
        return os.path.exists(self.gate)  # an open gate: building takes no time

    def compile(self) -> None:
        import time

        if self.compiled:  # built in a compile worker, which sent the built state back
            return
        while not os.path.exists(self.gate):
            time.sleep(0.02)
        with open(self.log, "a") as f:
            f.write(f"{self.name}\n")
        self.compiled = True


class SleepyRecordingChoice(RecordingChoice):
    """A ``RecordingChoice`` whose every run takes at least 0.2 s: its measurement lasts
    about a second (five runs under the tests' limits)."""

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        import time

        time.sleep(0.2)
        super().run(a, b, out=out)


class ThreadBuiltChoice(RecordingChoice):
    """A ``thread_safe_build`` choice: its build appends ``"<pid> build <thread name>"`` to
    ``log``, its runs what ``RecordingChoice`` appends; ``fail`` makes the build fail,
    ``crash`` makes it kill its process."""

    thread_safe_build = True

    def __init__(self, name: str, log: str, fail: bool = False, crash: bool = False) -> None:
        super().__init__(name, log)
        self.fail, self.crash = fail, crash

    def compile(self) -> None:
        import threading

        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} build {threading.current_thread().name}\n")
        if self.fail:
            raise ChoiceFailed("fake build error: no such tile")
        if self.crash:
            os.abort()


_RUNS_IN_THIS_PROCESS: Counter = Counter()


class WrongLaterChoice(_Fake):
    """Correct on its first run in a process, zeros after: passes a one-run check, then a
    later check in the same worker finds it wrong."""

    def run(self, a: Any, b: Any, *, out: Any) -> None:
        _RUNS_IN_THIS_PROCESS[self.name] += 1
        if _RUNS_IN_THIS_PROCESS[self.name] == 1:
            torch.mm(a, b, out=out)
        else:
            out.zero_()


_BUILDS_IN_FLIGHT = [0]
_IN_FLIGHT_LOCK = threading.Lock()


class MemoryHungryBuildChoice(ThreadBuiltChoice):
    """A thread-built choice whose build runs out of device memory while another build runs
    beside it in the same process (as warm-up launches on large scratch tensors can), and
    succeeds alone."""

    def compile(self) -> None:
        import time

        with _IN_FLIGHT_LOCK:
            _BUILDS_IN_FLIGHT[0] += 1
        try:
            time.sleep(0.2)  # long enough for the other builds to start
            with _IN_FLIGHT_LOCK:
                crowded = _BUILDS_IN_FLIGHT[0] > 1
            if crowded:
                raise torch.OutOfMemoryError("CUDA out of memory (fake): tried to allocate")
            super().compile()
        finally:
            with _IN_FLIGHT_LOCK:
                _BUILDS_IN_FLIGHT[0] -= 1
