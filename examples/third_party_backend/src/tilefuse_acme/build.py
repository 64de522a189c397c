"""Build a kernel's C++ into a shared object through tilefuse's verified cache, and run it.

Cache layout: ``plugin.build_artifact("acme-cpp", key, "kernel.so", ...)``, where ``key`` is
the SHA-256 of the source, the compiler's identity and flags, and the compile context's
salt (the active policy's ``uuid()``). ``build_artifact`` returns the path only when the
file's bytes hash to the record written when it was built, so what ``ctypes`` loads is what
this backend's compiler produced.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tilefuse import plugin
from tilefuse.errors import CompileError

CACHE_KIND = "acme-cpp"
FLAGS = ("-O2", "-fno-math-errno", "-std=c++17", "-fopenmp", "-fwrapv", "-shared", "-fPIC")


def find_compiler() -> str | None:
    """``$CXX`` when set, else the first of ``g++``, ``c++``, ``clang++`` on ``PATH``."""
    wanted = os.environ.get("CXX")
    for name in (wanted,) if wanted else ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


@functools.cache
def compiler_identity(compiler: str) -> str:
    """The compiler's path and ``--version`` banner: it enters every cache key."""
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return f"{compiler}\n{done.stdout}"


def build_library(source: str, salt: str = "") -> Path:
    """The path of the verified shared object built from ``source`` (cached).

    Raises ``CompileError`` with the compiler's last lines when the build fails, and
    ``CacheError`` when the cache directory is unusable.
    """
    compiler = find_compiler()
    if compiler is None:
        raise CompileError("acme: no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    ident = compiler_identity(compiler)
    key = hashlib.sha256("\0".join([source, ident, *FLAGS, salt]).encode()).hexdigest()

    def build(entry: Path, out: Path) -> None:
        src = entry / "kernel.cpp"
        plugin.atomic_write(src, source)
        done = subprocess.run([compiler, *FLAGS, str(src), "-o", str(out)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise CompileError(f"acme: {Path(compiler).name} failed on {src}:\n{tail}")

    return plugin.build_artifact(CACHE_KIND, key, "kernel.so", build)


class CppKernel:
    """A ``plugin.Kernel``: ``kernel(*tensors)`` runs the C++ function on their data.

    ``arg_names`` are the buffers in parameter order; ``build()`` compiles and loads the
    library (core calls it when the graph compiles, in a thread pool).
    """

    def __init__(self, name: str, source: str, function: str, arg_names: list[str],
                 salt: str = "") -> None:  # fmt: skip
        self.name = name
        self.source = source
        self.function = function
        self.arg_names = arg_names
        self.salt = salt
        self._fn: Any = None

    def build(self) -> None:
        if self._fn is not None:
            return
        library = ctypes.CDLL(str(build_library(self.source, self.salt)))
        fn = getattr(library, self.function)
        fn.argtypes = [ctypes.c_void_p] * len(self.arg_names)
        fn.restype = None
        self._fn = fn

    def __call__(self, *tensors: Any) -> None:
        if self._fn is None:
            self.build()
        # data_ptr() already points at each tensor's storage offset
        self._fn(*[t.data_ptr() for t in tensors])
