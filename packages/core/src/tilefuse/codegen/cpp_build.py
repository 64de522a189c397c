"""Building, caching and choosing the C++ wrapper (option ``cpp_wrapper``).

``select_wrapper(schedule, kernels, python_call)`` is what the pipeline calls once a
graph's kernels are built. By ``config.cpp_wrapper()``: ``off`` returns the Python
wrapper's ``call`` untouched; ``auto`` (the default) returns, for a static-size CUDA graph,
a ``cpp_background.BackgroundCppCall`` that swaps to the C++ wrapper once a background
thread has built it, and ``python_call`` for anything else, silently; ``on`` generates the
C++ wrapper (``cpp_wrapper.write_cpp_wrapper``), builds it and returns a
``CppWrapperCall``, and where that cannot be done the graph keeps the Python wrapper and
one warning says why:

- a graph with symbolic sizes (``LoweredGraph.symbolic``): one warning;
- something the C++ wrapper does not write (``CppUnsupported``: an extern op outside
  ``cpp_externs.CPP_EXTERNS``, a kernel whose backend gives no ``cpp_launch``, which is
  every Triton kernel under the interpreter...): a warning naming it, never an error;
- a failed build (compiler missing or failing, a library that does not load): a warning
  with the compiler's first error line, or ``CompileError`` under ``TILEFUSE_STRICT``.

The build: the system C++ compiler (``$CXX``, else ``c++``) compiles the source against
torch's headers (``torch.utils.cpp_extension.include_paths()``), CUDA's include directory
when there is one, and what the kernels' ``CppLaunch`` add, into a Python extension
module. It runs once per content: the cache key (``cpp_wrapper`` kind of
``plugin.build_artifact``) hashes the source, the compiler's identity (its path and
``--version``), the flags, torch's version and the Python ABI. The library is loaded
only after its bytes were checked against the record the build wrote.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import config, counters
from ..errors import CompileError
from ..scheduler import Schedule
from . import cpp_background
from .cpp_externs import CppUnsupported
from .cpp_wrapper import CppWrapperSource, constant_names, write_cpp_wrapper
from .kernel_cache import build_artifact, verified_artifact

log = logging.getLogger("tilefuse")
KIND = "cpp_wrapper"
CUDA_INCLUDE = Path("/usr/local/cuda/include")
FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-w")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time it is seen (``tilefuse.reset()``
    forgets them)."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning("tilefuse: %s", message)


def forget_warnings() -> None:
    with _warned_lock:
        _warned.clear()


def compiler() -> str:
    """The C++ compiler command: ``$CXX``, else ``c++``."""
    return os.environ.get("CXX", "").strip() or "c++"


@functools.lru_cache(maxsize=8)
def _compiler_identity(command: str) -> str:
    """The compiler's resolved path and first ``--version`` line (enters the cache key);
    raises ``CompileError`` when it cannot be run."""
    path = shutil.which(command)
    if path is None:
        raise CompileError(f"the C++ compiler {command!r} was not found; install g++ or set CXX")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(f"the C++ compiler {path} could not be run: {exc}") from exc
    first = (done.stdout or done.stderr).strip().splitlines()
    return f"{path}: {first[0] if first else ''}"


def _torch_paths() -> tuple[list[str], list[str]]:
    from torch.utils.cpp_extension import include_paths, library_paths

    includes = list(include_paths())
    if CUDA_INCLUDE.is_dir():
        includes.append(str(CUDA_INCLUDE))
    return includes, list(library_paths())


def compile_command(
    wrapper: CppWrapperSource, source: Path, out: Path, module: str, compile_only: bool = False
) -> list[str]:
    """The compiler invocation for ``wrapper`` (``compile_only``: an object file, no link:
    what CI checks where torch's CUDA libraries are absent)."""
    includes, lib_dirs = _torch_paths()
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    cmd = [compiler(), *FLAGS, f"-DTORCH_EXTENSION_NAME={module}",
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{sysconfig.get_paths()['include']}"]  # fmt: skip
    cmd += [f"-I{d}" for d in (*includes, *wrapper.include_dirs)]
    if compile_only:
        return [*cmd, "-c", str(source), "-o", str(out)]
    cmd += [str(source), "-o", str(out)]
    cmd += [f"-L{d}" for d in (*lib_dirs, *wrapper.library_dirs)]
    cmd += [f"-Wl,-rpath,{d}" for d in (*lib_dirs, *wrapper.library_dirs)]
    cmd += [f"-l{lib}" for lib in ("c10", "torch", "torch_cpu", "torch_python", *wrapper.libraries)]
    return cmd


def cache_key(wrapper: CppWrapperSource) -> str:
    """What determines the built library: source, compiler, flags, torch, Python ABI."""
    parts = [
        wrapper.source,
        _compiler_identity(compiler()),
        " ".join(FLAGS),
        repr((wrapper.include_dirs, wrapper.library_dirs, wrapper.libraries)),
        torch.__version__,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        sys.version,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


_running: set[subprocess.Popen] = set()  # compilers under way: stopped at exit
_running_lock = threading.Lock()
_exiting = False  # set at exit: no compiler starts after it


@atexit.register
def _stop_compilers() -> None:
    """Stop compilers a background build left running, and start no more, so none writes
    after exit."""
    global _exiting
    with _running_lock:
        _exiting = True
        for process in _running:
            process.kill()


def _forget_parents_compilers() -> None:
    """In a forked child: the parent's compilers are the parent's to stop."""
    global _running_lock, _exiting
    _running_lock = threading.Lock()
    _running.clear()
    _exiting = False


os.register_at_fork(after_in_child=_forget_parents_compilers)


def run_compiler(cmd: list[str], log_path: Path | None = None) -> None:
    """Run ``cmd``; ``CompileError`` with the compiler's first error line when it fails."""
    with _running_lock:  # started and registered at once: an exit stops it, or it never starts
        if _exiting:
            raise CompileError("the C++ compiler was not started: the process is exiting")
        try:
            process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)  # fmt: skip
        except OSError as exc:
            raise CompileError(f"the C++ compiler could not be run ({cmd[0]}): {exc}") from exc
        _running.add(process)
    try:
        stdout, stderr = process.communicate(timeout=900)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        process.communicate()
        raise CompileError(f"the C++ compiler ran past 900 s ({cmd[0]})") from exc
    finally:
        with _running_lock:
            _running.discard(process)
    if log_path is not None:
        log_path.write_text(f"{' '.join(cmd)}\n{stdout}\n{stderr}")
    if process.returncode != 0:
        errors = [line for line in stderr.splitlines() if "error" in line]
        first = errors[0] if errors else (stderr.strip().splitlines() or [""])[-1]
        where = f" (log: {log_path})" if log_path is not None else ""
        raise CompileError(f"the C++ wrapper failed to compile{where}: {first.strip()}")


def build(wrapper: CppWrapperSource) -> Any:
    """The loaded extension module of ``wrapper``, built unless the cache has it.

    Raises ``CompileError`` when it cannot be compiled or loaded, ``CacheError`` when the
    cache directory is unusable.
    """
    key = cache_key(wrapper)
    module = f"tilefuse_cpp_wrapper_{key[:24]}"
    if module in sys.modules:
        return sys.modules[module]

    def compile_into(entry: Path, out: Path) -> None:
        source = entry / "wrapper.cpp"
        source.write_text(wrapper.source)
        run_compiler(compile_command(wrapper, source, out, module), entry / "build.log")

    path = build_artifact(KIND, key, "wrapper.so", compile_into)
    if not verified_artifact(path):  # changed since build_artifact checked it: do not load
        raise CompileError(f"the built C++ wrapper {path} no longer matches its record")
    try:
        loader = importlib.machinery.ExtensionFileLoader(module, str(path))
        spec = importlib.util.spec_from_file_location(module, str(path), loader=loader)
        assert spec is not None
        loaded = importlib.util.module_from_spec(spec)
        loader.exec_module(loaded)
    except ImportError as exc:
        raise CompileError(f"the built C++ wrapper {path} does not load: {exc}") from exc
    sys.modules[module] = loaded
    return loaded


class CppWrapperCall(functools.partial):
    """A graph's ``call(args)`` through its C++ wrapper: ``cpp_call(python_call, constants,
    args)``, which runs ``python_call`` for a call whose inputs it declines (an unaligned
    tensor); ``constants`` are the graph's, in ``cpp_wrapper.constant_names`` order.

    A ``functools.partial`` (implemented in C), so a call runs no Python frame of
    tilefuse's: the per-call host cost is the library's.
    """

    def __new__(
        cls,
        cpp_call: Callable[[Callable, tuple[Any, ...], list[Any]], Any],
        python_call: Callable,
        constants: tuple[Any, ...] = (),
    ):
        return super().__new__(cls, cpp_call, python_call, tuple(constants))

    @property
    def cpp_call(self) -> Callable[[Callable, tuple[Any, ...], list[Any]], Any]:
        return self.func

    @property
    def constants(self) -> tuple[Any, ...]:
        return self.args[1]

    @property
    def python_call(self) -> Callable:
        return self.args[0]


def select_wrapper(schedule: Schedule, kernels: dict[int, Any], python_call: Callable,
                   report: Any = None) -> Callable:  # fmt: skip
    """The graph's ``call``: by ``config.cpp_wrapper()``, ``python_call`` (``off``), the
    C++ wrapper where it can be generated and built, else ``python_call`` (``on``: see the
    module docstring), or, for a CUDA graph, a ``BackgroundCppCall`` that swaps to it once
    built (``auto``; anything else keeps ``python_call``, silently).

    ``report`` (a ``GraphReport``), when given, gets ``wrapper_language`` (for ``auto``, once
    a call through the C++ wrapper succeeded) and, for C++, the source in ``cpp_wrapper``. Raises
    ``CompileError`` only for a failed build under strict mode.
    """
    setting = config.cpp_wrapper()
    if setting == "off":
        return python_call
    if setting == "auto":
        return _in_background(schedule, kernels, python_call, report)
    if schedule.graph.symbolic:
        counters.bump("cpp_wrapper_fallbacks")
        warn_once("cpp_wrapper: a graph with symbolic sizes runs the Python wrapper (the C++ "
                  "wrapper is written for static sizes)")  # fmt: skip
        return python_call
    try:
        wrapper = write_cpp_wrapper(schedule, kernels)
    except CppUnsupported as exc:
        counters.bump("cpp_wrapper_fallbacks")
        warn_once(f"cpp_wrapper: this graph runs the Python wrapper: {exc}")
        return python_call
    if report is not None:
        report.cpp_wrapper = wrapper.source
    try:
        call = _built_call(wrapper, schedule, python_call)
    except Exception as exc:
        if config.strict():
            if isinstance(exc, CompileError):
                raise
            raise CompileError(f"the C++ wrapper could not be built: {exc}") from exc
        counters.bump("cpp_wrapper_fallbacks")
        warn_once(f"cpp_wrapper: the C++ wrapper could not be built, so this graph runs the "
                  f"Python wrapper: {exc}")  # fmt: skip
        return python_call
    counters.bump("cpp_wrappers")
    if report is not None:
        report.wrapper_language = "c++"
    return call


def _built_call(wrapper: CppWrapperSource, schedule: Schedule, python_call: Callable) -> Callable:
    """``wrapper`` built and loaded, as the graph's call (raises as ``build``)."""
    module = build(wrapper)
    constants = schedule.graph.constants
    return CppWrapperCall(
        module.call, python_call, tuple(constants[n] for n in constant_names(constants))
    )


def _wants_background(graph: Any) -> bool:
    """Whether ``auto`` builds ``graph``'s C++ wrapper: static sizes, a CUDA buffer, a C++
    compiler on the path, and no CUDA graphs (their replays run no wrapper at all)."""
    on_cuda = any(b.layout.device.type == "cuda" for b in graph.buffers)
    return (
        not graph.symbolic
        and on_cuda
        and not config.cuda_graphs()
        and shutil.which(compiler()) is not None
    )


def _in_background(schedule: Schedule, kernels: dict[int, Any], python_call: Callable,
                   report: Any) -> Callable:  # fmt: skip
    """``auto``: a ``BackgroundCppCall`` building the C++ wrapper of a static-size CUDA
    graph whose wrapper C++ can write, where a compiler is found; else ``python_call``."""
    if not _wants_background(schedule.graph):
        return python_call
    try:
        wrapper = write_cpp_wrapper(schedule, kernels)
    except CppUnsupported as exc:
        log.debug("tilefuse: no background C++ wrapper for this graph: %s", exc)
        return python_call
    if report is not None:
        report.cpp_wrapper = wrapper.source
    call = cpp_background.BackgroundCppCall(python_call)

    def first_cpp_call() -> None:
        if report is not None:
            report.wrapper_language = "c++"

    what = f"graph {report.graph_id}" if report is not None else "a graph"
    cpp_background.submit(call, lambda: _built_call(wrapper, schedule, python_call), what,
                          first_cpp_call)  # fmt: skip
    return call
