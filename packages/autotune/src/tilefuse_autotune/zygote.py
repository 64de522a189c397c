"""A pre-imported process that forks worker processes: a worker starts in milliseconds.

A fresh worker interpreter spends seconds importing torch and triton before it can build or
measure anything (about 5 s on an H200 host, 6 s for 15 at once). The zygote pays that
once: it is started as ``python -I .../_zygote.py`` like a worker, imports torch, triton,
the worker loop and the installed choice providers, never initialises a GPU, and then forks
one child per request. Each child takes the requesting process's environment, ``sys.path``
and standard streams as they are at the request, initialises its GPU itself, and runs the
same worker loop as a spawned worker (``worker.child_main``), so a forked worker and a
spawned one behave alike.

Contract:
- ``Zygote.spawn(env, pass_fds)`` returns a ``ForkedProcess`` (``pid``, ``poll``, ``wait``,
  ``kill``, as ``subprocess.Popen``; exit statuses included) or raises ``ZygoteUnavailable``
  when the zygote cannot start or has died, so that the caller spawns a worker itself.
- The first ``spawn`` starts the zygote and waits for it (as long as a spawned worker's
  start-up may take, ``worker.STARTUP_TIMEOUT_S``: a zygote that started earlier is never
  slower than a fresh interpreter); ``start()`` begins that early, in the background.
- The zygote exits at the end of its control socket: when its owner closes it (``close``;
  one still starting is killed) or exits. Its children are workers: they exit when their
  task pipe closes.

Protocol (owner -> zygote, one ``SOCK_SEQPACKET`` message each): first ``sys.path``; then
requests, each the worker's environment, carrying the worker's two pipe ends and the
owner's stdout and stderr as ancillary descriptors. Zygote -> owner: ``("ready",)`` or
``("error", text)`` once, then ``("forked", pid)`` with the read end of that child's status
pipe, on which the zygote writes the child's exit code when it reaps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("tilefuse.autotune")

_ZYGOTE_SCRIPT = str(Path(__file__).resolve().with_name("_zygote.py"))
_MAX_MESSAGE = 1 << 20
# Imported before any fork: what every worker needs. Missing ones are skipped.
PRELOAD = (
    "torch",
    "triton",
    "triton.language",
    "triton.runtime.cache",
    "tilefuse",
    "tilefuse_autotune.measure",
)
ENV_SWITCH = "TILEFUSE_WORKER_ZYGOTE"  # "0" turns the zygote off: every worker is spawned
# Read when the zygote imports (``@triton.jit`` picks the interpreter then): a worker asked
# for with another value is spawned, so that it imports under its own.
IMPORT_TIME_SETTINGS = ("TRITON_INTERPRET",)


class ZygoteUnavailable(Exception):
    """The zygote cannot fork a worker now; ``str(exc)`` says why. ``sent``: the request
    had gone out (a child may hold the pipe ends it carried)."""

    def __init__(self, reason: str, sent: bool = False) -> None:
        super().__init__(reason)
        self.sent = sent


def enabled() -> bool:
    """Whether workers fork from a zygote (``TILEFUSE_WORKER_ZYGOTE``, default on where
    ``os.fork`` exists)."""
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return False
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class ForkedProcess:
    """A worker forked by the zygote, as much of ``subprocess.Popen`` as ``Worker`` uses.

    Its exit code arrives on the status pipe the zygote writes when it reaps the child;
    negative codes name signals, as ``Popen.returncode`` does. Thread-safe: ``Worker.close``
    may kill it while another thread waits for it.
    """

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self._status_fd = status_fd
        self._lock = threading.Lock()
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait(timeout=0)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the child is reaped. With ``timeout`` 0: ``None`` while it
        runs; with a longer one, ``subprocess.TimeoutExpired`` when it passes first."""
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            poller = select.poll()  # not select.select: descriptors may be above 1023
            poller.register(self._status_fd, select.POLLIN)
            if not poller.poll(None if timeout is None else int(timeout * 1000)):
                if timeout:
                    raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
                return None
            raw = os.read(self._status_fd, 64)
            fd, self._status_fd = self._status_fd, -1
            os.close(fd)
            try:
                self.returncode = int(raw.decode())
            except ValueError:
                # End of file without a code: the zygote is gone and so is the child (it
                # keeps its own copy of the pipe's write end open until it exits).
                self.returncode = -int(signal.SIGKILL)
            return self.returncode

    def kill(self) -> None:
        # Reaped already (its status is in): its pid may belong to another process now.
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def __del__(self) -> None:
        if self._status_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)


class Zygote:
    """The owner's side of one zygote process (see the module docstring)."""

    def __init__(self, env: Mapping[str, str] | None = None, cwd: str = os.sep) -> None:
        self._start_env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self._lock = threading.Lock()  # guards the state below; one request at a time
        self._started = threading.Event()  # the start ended, ready or not
        self._starting = False
        self._closed = False
        self._boot_sock: socket.socket | None = None  # while starting
        self._sock: socket.socket | None = None  # once ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._error: str | None = None

    def start(self) -> None:
        """Begin starting the zygote in the background (idempotent); ``spawn`` waits."""
        with self._lock:
            if self._starting or self._closed:
                return
            self._starting = True
        threading.Thread(target=self._boot, name="tilefuse-zygote", daemon=True).start()

    def _boot(self) -> None:
        from .worker import STARTUP_TIMEOUT_S, child_sys_path

        booted = time.monotonic()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Any CUDA check an import makes asks NVML, not the driver: a fork must find
            # the driver untouched. (Forked workers get the requester's variables.)
            env = {**self._start_env, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
            with self._lock:
                if self._closed:
                    raise ZygoteUnavailable("closed while starting")
                self._boot_sock = mine
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", _ZYGOTE_SCRIPT, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    cwd=self._cwd,
                )
            theirs.close()
            mine.sendall(pickle.dumps(child_sys_path()))
            mine.settimeout(STARTUP_TIMEOUT_S)
            answer = pickle.loads(mine.recv(_MAX_MESSAGE) or pickle.dumps(("error", "exited")))
            mine.settimeout(None)
            if answer[0] != "ready":
                raise ZygoteUnavailable(str(answer[1]))
            with self._lock:
                if self._closed:
                    raise ZygoteUnavailable("closed while starting")
                self._sock, self._boot_sock = mine, None
            log.debug("tilefuse: worker zygote %d ready in %.2f s", self._proc.pid,
                      time.monotonic() - booted)  # fmt: skip
        except Exception as exc:
            with self._lock:
                closed = self._closed
                self._error = self._error or f"{type(exc).__name__}: {exc}"
                self._boot_sock = None
            if not closed:
                log.info("tilefuse: the worker zygote did not start (%s); workers start as "
                         "fresh processes", self._error)  # fmt: skip
            mine.close()
            with contextlib.suppress(OSError):
                theirs.close()
            self._stop_process()
        finally:
            self._started.set()

    def ready(self, timeout_s: float) -> bool:
        """Start the zygote if needed; whether it is up and forking within ``timeout_s``."""
        self.start()
        return self._started.wait(timeout_s) and self._sock is not None

    def spawn(self, env: Mapping[str, str], pass_fds: Sequence[int]) -> ForkedProcess:
        """Fork a worker with ``env`` whose pipe ends are ``pass_fds`` (kept open here: the
        caller closes its copies). Raises ``ZygoteUnavailable``; its ``sent`` is ``True``
        when the request went out, so a child may hold those pipe ends: make new ones."""
        from .worker import STARTUP_TIMEOUT_S

        self.start()
        if not self._started.wait(STARTUP_TIMEOUT_S):
            raise ZygoteUnavailable("the zygote is still starting")
        with self._lock:
            sock = self._sock
            if sock is None:
                raise ZygoteUnavailable(self._error or "the zygote is closed")
            differing = [k for k in IMPORT_TIME_SETTINGS if env.get(k) != self._start_env.get(k)]
            if differing:
                raise ZygoteUnavailable(
                    f"{', '.join(differing)} changed since the zygote's imports"
                )
            streams = [_stream_fd(1), _stream_fd(2)]
            try:
                message = pickle.dumps(dict(env))
                socket.send_fds(sock, [message], [*pass_fds, *streams])
                data, got, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 1)
            except OSError as exc:
                self._fail(f"the zygote stopped answering ({exc})")
                raise ZygoteUnavailable(self._error or "", sent=True) from None
            finally:
                for fd, std in zip(streams, (1, 2)):
                    if fd != std:
                        os.close(fd)
            if not data:
                self._fail("the zygote exited")
                raise ZygoteUnavailable(self._error or "", sent=True)
            answer = pickle.loads(data)
            if answer[0] != "forked" or len(got) != 1:
                for fd in got:
                    os.close(fd)
                raise ZygoteUnavailable(f"the zygote could not fork: {answer[1]}")
            return ForkedProcess(answer[1], got[0])

    def _fail(self, reason: str) -> None:
        """With the lock held: the zygote is unusable from now on."""
        self._error = reason
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._stop_process()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the zygote: a ready one exits at the end of its socket (killed after 5 s),
        a starting one is killed now. Its forked workers are left to their owners."""
        with self._lock:
            self._closed = True
            self._error = self._error or "the zygote is closed"
            sock, self._sock = self._sock, None
            proc = self._proc
            booting = self._boot_sock
        if sock is not None:
            sock.close()  # end of file: the zygote exits
        elif booting is not None and proc is not None:
            proc.kill()  # its start-up ends with an error: nothing to wait for
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with self._lock:
                if self._proc is proc:
                    self._proc = None


def _stream_fd(fd: int) -> int:
    """``fd`` when it is open here, else ``/dev/null``'s (a daemon's streams may be closed)."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


# ---- the zygote process ----------------------------------------------------------------


def serve(sock: socket.socket) -> None:
    """The zygote's loop (``_zygote.py``, once ``sys.path`` is the owner's): preload,
    answer ``ready``, fork on request until the owner's socket closes. Never returns in a
    forked child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the owner to handle
    problem = _preload()
    if problem is not None:
        sock.sendall(pickle.dumps(("error", problem)))
        return
    sock.sendall(pickle.dumps(("ready",)))
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the poll below
    statuses: dict[int, int] = {}  # pid -> write end of its status pipe
    poller = select.poll()  # not select.select: descriptors may be above 1023
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        readable = {fd for fd, _ in poller.poll()}
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        _reap(statuses)
        if sock.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 8)
        except InterruptedError:
            continue
        if not data:
            return  # the owner closed the socket or exited
        env = pickle.loads(data)
        status_r, status_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (*fds, status_r, status_w):
                os.close(fd)
            sock.sendall(pickle.dumps(("error", f"fork failed: {exc}")))
            continue
        if pid == 0:
            _become_worker(sock, fds, env, [wake_r, wake_w, status_r, *statuses.values()])
        for fd in fds:
            os.close(fd)
        statuses[pid] = status_w
        try:
            socket.send_fds(sock, [pickle.dumps(("forked", pid))], [status_r])
        finally:
            os.close(status_r)
        _reap(statuses)


def _preload() -> str | None:
    """Import what every worker needs; the reason to refuse forking, or ``None``."""
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for where in ("triton.runtime.cache", "triton.compiler.compiler"):
        # Triton's own version hash (it reads libtriton, 0.3 s): once here, not per worker
        key = getattr(sys.modules.get(where), "triton_key", None)
        if key is not None:
            with contextlib.suppress(Exception):
                key()
            break
    with contextlib.suppress(Exception):  # the providers: their modules, their imports
        from tilefuse import plugin
        from tilefuse.discovery import registry

        registry().usable(plugin.CHOICES_GROUP)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "an import initialised CUDA; a forked worker could not use the GPU"
    return None


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(fd)


def _become_worker(
    sock: socket.socket, fds: list[int], env: dict[str, str], inherited: list[int]
) -> None:
    """In the forked child: drop the zygote's state, take the owner's environment and
    streams, run the worker loop, and exit (never return into the zygote's loop)."""
    code = 1
    try:
        sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a spawned worker
        for fd in inherited:  # not this child's own status write end: see ForkedProcess
            with contextlib.suppress(OSError):
                os.close(fd)
        task_fd, result_fd, out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        os.environ.clear()
        os.environ.update(env)
        from ._child import run

        run(task_fd, result_fd)
        code = 0
    except BaseException:
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


__all__ = ["ENV_SWITCH", "ForkedProcess", "Zygote", "ZygoteUnavailable", "enabled", "serve"]
