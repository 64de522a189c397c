"""C++ wrappers built in the background (``cpp_wrapper="auto"``, the default on CUDA).

Building a graph's C++ wrapper takes the system compiler several seconds; a model with
four graphs would pay that four times before its first step. In ``auto`` mode the graph's
call is a ``BackgroundCppCall``: it runs the Python wrapper from the first call, and swaps
to the C++ wrapper once a background thread has built and loaded it. Both wrappers follow
one memory plan and return the same results, so the swap between two calls changes only
the host time per call.

Builds run on at most ``workers()`` daemon threads. ``wait(timeout)`` blocks until every
build submitted so far has ended (``tilefuse.wait_for_builds``: benchmarks call it before
timing). A build that fails leaves the Python wrapper in place and logs why at INFO: the
user asked for nothing, so nothing warns; after ``MAX_FAILURES`` failures in a row (a
cause that fails every build) none is tried until ``forget()``. A swapped-in wrapper whose
first call raises gives its graph back to the Python wrapper. ``forget()``
(``tilefuse.reset()``) also makes builds still under way load without counting in
``stats()``. At exit, compilers still running are stopped and none starts
(``cpp_build.run_compiler``), so none writes into the cache after the process has gone. A
forked child starts with no build pending (the parent's threads do not exist there) and
does not stop the parent's compilers.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from .. import counters

log = logging.getLogger("tilefuse")

_queue: queue.Queue[Callable[[], None]] = queue.Queue()
_state = threading.Condition()
_threads: list[threading.Thread] = []
_pending = 0  # builds submitted and not yet ended
_generation = 0  # bumped by forget(): older builds load but do not count
# Builds failed one after another: the cause (no Python headers, a broken compiler, a full
# disk) would fail the next ones too, so from MAX_FAILURES on they are skipped until forget().
MAX_FAILURES = 3
_failures = 0


def workers() -> int:
    """Build threads: a quarter of the cores, 1 to 4 (each runs one compiler process)."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _capturing() -> bool:
    """As ``cuda_graphs.CudaGraphRunner._capturing``, which codegen may not import (layers)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class BackgroundCppCall:
    """A graph's ``call(args)``: ``python_call`` until ``ready`` swaps in the C++ one.

    ``language`` is ``"python"``, then ``"c++"`` once the swap happened.
    """

    __slots__ = ("call", "python_call", "language")

    def __init__(self, python_call: Callable) -> None:
        self.call = python_call
        self.python_call = python_call
        self.language = "python"

    def __call__(self, args: list[Any]) -> Any:
        return self.call(args)

    def ready(self, cpp_call: Callable, on_first_call: Callable[[], None] | None = None) -> None:
        """Swap in ``cpp_call`` from the next call on (a call in flight keeps its wrapper).

        Its first call is tried: one that raises puts the Python wrapper back for good and
        reruns the call with it (a graph's first call is checked the same way), and one
        during a CUDA-graph capture runs the Python wrapper instead (the C++ wrapper loads
        its kernels at its first launch, which a capture does not allow). ``on_first_call``
        runs once the first call through ``cpp_call`` has succeeded."""

        def first_call(args: list[Any]) -> Any:
            if _capturing():
                return self.python_call(args)
            saved = list(args)
            try:
                out = cpp_call(args)
            except Exception as exc:
                self.call, self.language = self.python_call, "python"
                log.info("tilefuse: a background-built C++ wrapper failed on its first call, so "
                         "its graph keeps the Python wrapper: %s", exc)  # fmt: skip
                return self.python_call(saved)
            self.call = cpp_call
            if on_first_call is not None:
                on_first_call()
            return out

        self.call = first_call
        self.language = "c++"


def submit(call: BackgroundCppCall, build: Callable[[], Callable], what: str,
           on_first_call: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Run ``build()`` on a build thread, in a copy of the caller's context (the compile's
    settings, ``config.overrides``); on success its result replaces ``call``'s Python
    wrapper (``BackgroundCppCall.ready``, which runs ``on_first_call``). ``what`` names
    the graph in the INFO line of a failure. Where no build thread can be started, ``call``
    keeps the Python wrapper."""
    global _pending
    generation = _generation
    context = contextvars.copy_context()

    def job() -> None:
        global _failures
        if _failures >= MAX_FAILURES:
            log.debug("tilefuse: no background C++ wrapper for %s: earlier builds failed", what)
            return
        try:
            cpp_call = context.run(build)
        except Exception as exc:  # the Python wrapper stays: a slower call, never a wrong one
            _failures += 1
            last = _failures >= MAX_FAILURES
            log.info("tilefuse: the background C++ wrapper of %s was not built, so it keeps "
                     "the Python wrapper%s: %s", what,
                     ", and after this many failures no more are built in this process "
                     "(tilefuse.reset() tries again)" if last else "", exc)  # fmt: skip
            return
        _failures = 0
        call.ready(cpp_call, on_first_call)
        if generation == _generation:
            counters.bump("cpp_wrappers")

    with _state:
        _threads[:] = [t for t in _threads if t.is_alive()]
        if len(_threads) < workers():
            thread = threading.Thread(target=_work, name="tilefuse-cpp-wrapper", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had (interpreter shutdown, limits)
                if not _threads:
                    log.info("tilefuse: no background C++ wrapper for %s: %s", what, exc)
                    return
            else:
                _threads.append(thread)
        _pending += 1
        _queue.put(job)


def _work() -> None:
    global _pending
    while True:
        job = _queue.get()
        try:
            job()
        except Exception:  # a bug here must not kill the worker that others wait on
            log.exception("tilefuse: background C++ wrapper build")
        finally:
            with _state:
                _pending -= 1
                _state.notify_all()


def wait(timeout: float | None = None) -> bool:
    """Block until every build submitted so far has ended (or ``timeout`` seconds have
    passed); ``True`` when none is left."""
    with _state:
        return _state.wait_for(lambda: _pending == 0, timeout)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's build threads: nothing is pending in it
    (its graphs keep the wrapper they had), and a later submit starts new threads."""
    global _queue, _state, _pending
    _queue = queue.Queue()
    _state = threading.Condition()
    _threads.clear()
    _pending = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def forget() -> None:
    """Builds under way still swap their graph to C++, but no longer count in ``stats()``,
    and builds are tried again after a failure (``tilefuse.reset()``)."""
    global _generation, _failures
    with _state:
        _generation += 1
        _failures = 0
