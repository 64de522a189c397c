"""An isolated worker process: runs one picklable task at a time, may die without harm.

The parent starts ``python -I .../tilefuse_autotune/_child.py`` (never
``multiprocessing``'s spawn or fork: those re-import the user's ``__main__`` or inherit
a CUDA context) in the filesystem root, or has the zygote fork one
(``tilefuse_autotune.zygote``: the same isolation and entry, torch already imported), and
talks to it over two private pipes with ``multiprocessing.connection`` framing.
Isolated mode and that working directory keep the user's directory out of the child's
imports: a ``tilefuse_autotune/`` folder where the user runs is never imported. The
child's stdout and stderr stay the parent's, so a kernel's prints cannot corrupt the
protocol.

Protocol (parent -> child): the parent's ``sys.path`` once (``child_sys_path``), then tasks
``(function, args)``. A task function receives a ``begin`` callback as its first
argument and calls it when the part that ``call(timeout_s=...)`` limits starts; the
preparation before it (imports, building inputs, a cached rebuild) runs under
``prepare_timeout_s``. Child -> parent: ``("begin",)``, then ``("ok", result)`` or
``("error", text)``.

Contract of ``Worker.call``: returns the task's result; raises ``TaskError`` when the
task raised (the worker lives on), ``WorkerCrashed`` when the process died (it is
restarted on the next call) and ``WorkerTimeout`` when a limit passed (the process is
killed and restarted on the next call).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .zygote import ForkedProcess, Zygote, ZygoteUnavailable

log = logging.getLogger("tilefuse.autotune")

STARTUP_TIMEOUT_S = 120.0
_CHILD_SCRIPT = str(Path(__file__).resolve().with_name("_child.py"))
# Not the user's directory: nothing there is imported or written by accident, and nobody
# but the administrator can write here.
CHILD_CWD = os.path.abspath(os.sep)
# Settings that hold paths: a relative one means the same place in the child as here.
_PATH_SETTINGS = ("TILEFUSE_CACHE_DIR", "TILEFUSE_DEBUG_DIR", "XDG_CACHE_HOME")


class WorkerFailure(Exception):
    """Base of the ways a task can fail inside a worker."""


class TaskError(WorkerFailure):
    """The task raised; ``str(exc)`` is the child's ``Type: message``."""


class WorkerCrashed(WorkerFailure):
    """The worker process died (segfault, abort, ``os._exit``) while running the task."""


class WorkerTimeout(WorkerFailure):
    """The task ran past its limit; the worker was killed."""


# Set once the interpreter exits (``mark_exiting``): no worker starts a process any more,
# so a build thread that wakes during exit cannot leave a child building after it.
_exiting = threading.Event()


def mark_exiting() -> None:
    """From now on ``Worker`` starts no process: a call raises ``WorkerCrashed``. For the
    interpreter's exit (``Bench.close_at_exit``); it is never undone."""
    _exiting.set()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Worker:
    """One child process; restarted on demand after it crashes or is killed.

    The child's environment is this process's as it is at each start, with ``env`` (say,
    the visible GPUs that pin a benchmark worker to its device) set on top.
    """

    def __init__(self, env: Mapping[str, str] | None = None, zygote: Zygote | None = None) -> None:
        self._env = dict(env or {})
        self._zygote = zygote
        self._proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        self._to_child: Connection | None = None
        self._from_child: Connection | None = None
        self._lock = threading.Lock()
        self._closes = 0  # close() calls so far: a start that spans one kills its child

    def _start(self) -> None:
        closes = self._closes
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        env = child_env({**os.environ, **self._env})
        forked, sent = self._fork(env, task_r, result_w)
        if forked is None and sent:  # a lost child may hold those pipe ends: new ones
            for fd in (task_r, task_w, result_r, result_w):
                os.close(fd)
            task_r, task_w = os.pipe()
            result_r, result_w = os.pipe()
        try:
            self._proc = forked or subprocess.Popen(
                [sys.executable, "-I", _CHILD_SCRIPT, str(task_r), str(result_w)],
                pass_fds=(task_r, result_w),
                env=env,
                stdin=subprocess.DEVNULL,
                cwd=CHILD_CWD,
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self._to_child = Connection(task_w, readable=False)
        self._from_child = Connection(result_r, writable=False)
        if self._closes != closes:  # close() ran while the child started: it found none
            self.kill()
            raise WorkerCrashed("the worker was closed while its process started")
        self._to_child.send(child_sys_path())
        self._expect("ready", STARTUP_TIMEOUT_S)

    def _fork(
        self, env: dict[str, str], task_r: int, result_w: int
    ) -> tuple[ForkedProcess | None, bool]:
        """The child forked by the zygote, or ``None`` (no zygote, or it cannot fork now:
        the caller spawns a fresh interpreter instead); and whether a failed request went
        out with the pipe ends (``ZygoteUnavailable.sent``)."""
        if self._zygote is None:
            return None, False
        asked = time.monotonic()
        try:
            child = self._zygote.spawn(env, (task_r, result_w))
        except ZygoteUnavailable as exc:
            log.debug("tilefuse: spawning a worker, not forking it: %s", exc)
            return None, exc.sent
        log.debug("tilefuse: worker %d forked by the zygote in %.2f s", child.pid,
                  time.monotonic() - asked)  # fmt: skip
        return child, False

    def _expect(self, tag: str, timeout_s: float) -> Any:
        assert self._from_child is not None
        if not self._from_child.poll(timeout_s):
            self.kill()
            raise WorkerTimeout(f"no answer within {timeout_s:g} s")
        try:
            message = self._from_child.recv()
        except (EOFError, OSError):
            code = self._proc.wait() if self._proc is not None else None
            self._forget()
            raise WorkerCrashed(_describe_exit(code)) from None
        if message[0] == "error":
            raise TaskError(message[1])
        if message[0] != tag:
            self.kill()
            raise WorkerCrashed(f"protocol error: expected {tag!r}, got {message[0]!r}")
        return message[1] if len(message) > 1 else None

    def start(self) -> None:
        """Start the child now unless it runs (``call`` does it anyway): to overlap its
        start-up with other work. Raises ``WorkerTimeout`` or ``WorkerCrashed`` when it
        does not come up."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if _exiting.is_set():
            raise WorkerCrashed("not started: the interpreter is exiting")
        if self._proc is None or self._proc.poll() is not None:
            self._forget()
            self._start()

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timeout_s: float,
        prepare_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> Any:
        """Run ``fn(begin, *args)`` in the child; see the module docstring for the contract."""
        with self._lock:
            self._ensure_started()
            assert self._to_child is not None
            try:
                self._to_child.send((fn, args))
            except (BrokenPipeError, OSError):
                code = self._proc.wait() if self._proc is not None else None
                self._forget()
                raise WorkerCrashed(_describe_exit(code)) from None
            self._expect("begin", prepare_timeout_s)
            return self._expect("ok", timeout_s)

    def _forget(self) -> None:
        for conn in (self._to_child, self._from_child):
            if conn is not None:
                conn.close()
        self._to_child = self._from_child = None
        self._proc = None

    def kill(self) -> None:
        """Stop the child now (SIGKILL); the next ``call`` starts a fresh one."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._forget()

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not.

        While another thread's ``call`` runs (a background build), only the process is
        killed: that ``call`` sees it die (``WorkerCrashed``) and closes the pipes itself.
        Closing them here as well would race with it, and a pipe closed twice can close a
        descriptor the system already gave to someone else (``Bad file descriptor`` later).
        """
        self._closes += 1
        if not self._lock.acquire(blocking=False):
            proc = self._proc
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.kill()
            return
        try:
            if self._proc is None:
                return
            try:
                assert self._to_child is not None
                self._to_child.send(None)
                self._proc.wait(timeout=5)
            except Exception:
                pass
            self.kill()
        finally:
            self._lock.release()


# Set in the parent (say, to ``DEBUG``): workers log the ``tilefuse.autotune`` logger's records
# at that level to their stderr (the parent's), e.g. each candidate's phases.
LOG_LEVEL_ENV = "TILEFUSE_AUTOTUNE_WORKER_LOG"


def _log_to_stderr(level: str) -> None:
    import logging

    level = level.strip()
    if not level:
        return
    logger = logging.getLogger("tilefuse.autotune")
    try:  # a name (DEBUG) or a number (10); anything else logs nothing, the worker runs
        logger.setLevel(int(level) if level.isdigit() else level.upper())
    except ValueError:
        print(f"tilefuse: ignoring {LOG_LEVEL_ENV}={level!r}: not a logging level (DEBUG, "
              "INFO, 10...)", file=sys.stderr)  # fmt: skip
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"  [worker {os.getpid()}] %(message)s"))
    logger.addHandler(handler)


def child_sys_path() -> list[str]:
    """This process's ``sys.path`` for a worker: relative entries made absolute against the
    current directory, and ``""`` (the working directory, wherever the user stands) left out.
    """
    return [os.path.abspath(entry) for entry in sys.path if entry]


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` for a worker: the settings that hold paths made absolute (the worker runs
    in ``CHILD_CWD``)."""
    env = dict(base)
    for name in _PATH_SETTINGS:
        if env.get(name, "").strip():
            env[name] = os.path.abspath(env[name].strip())
    return env


def child_main(tasks: Connection, results: Connection) -> None:
    """The worker loop (run by ``_child.py`` once ``sys.path`` is set): tasks until EOF or
    ``None``."""
    try:  # a crashing kernel must not leave core files behind
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    _log_to_stderr(os.environ.get(LOG_LEVEL_ENV, ""))
    results.send(("ready",))

    def begin() -> None:
        results.send(("begin",))

    while True:
        try:
            raw = tasks.recv_bytes()
        except EOFError:
            return
        began = False

        def begin_once() -> None:
            nonlocal began
            if not began:
                began = True
                begin()

        try:
            message = pickle.loads(raw)
            if message is None:
                return
            fn, args = message
            result = fn(begin_once, *args)
            begin_once()
            results.send(("ok", result))
        except BaseException as exc:  # report everything; the parent decides
            results.send(("error", f"{type(exc).__name__}: {exc}"))
