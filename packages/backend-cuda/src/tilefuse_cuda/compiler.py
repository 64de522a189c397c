"""Compile rendered ``.cu`` sources into shared objects with nvcc, cached on disk.

Cache layout: ``tilefuse.config.cache_dir() / "cuda" / <key[:2]> / <key>/``
holding ``kernel.cu``, ``kernel.so`` and ``nvcc.log``; ``key`` hashes the
source, the nvcc version, the CUTLASS version and the flags. Writers take a
file lock per key and publish the ``.so`` by atomic rename, so concurrent
processes never load a half-written object.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filelock import FileLock

from tilefuse import config
from tilefuse.errors import ChoiceFailed

from .toolchain import cutlass_headers, find_nvcc, nvcc_version

ARCH = "sm_90a"
NVCC_FLAGS = (
    "-std=c++17",
    "-O3",
    "-DNDEBUG",
    f"-arch={ARCH}",
    "--expt-relaxed-constexpr",
    "-shared",
    "-Xcompiler",
    "-fPIC",
)
# ptxas warns C7510 ("wgmma.mma_async instructions are serialized") when it had to
# serialise the warp-group MMAs: the kernel runs, many times slower. Refuse it.
SERIALIZED_WGMMA = "C7510"
COMPILE_TIMEOUT_S = 600


def cache_root() -> Path:
    return config.cache_dir() / "cuda"


def cache_key(source: str) -> str:
    """Content hash of everything that determines the compiled object."""
    h = hashlib.sha256()
    for part in (source, nvcc_version(), cutlass_headers().version, " ".join(NVCC_FLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_source(source: str, name: str = "kernel") -> Path:
    """The path of the compiled ``.so`` for ``source``, building it if not cached.

    Raises ``ChoiceFailed`` (with the source's path and nvcc's output) when nvcc
    fails, times out or reports serialised wgmma (C7510); ``ToolchainMissing``
    when nvcc or the CUTLASS headers are absent.
    """
    nvcc = find_nvcc()
    headers = cutlass_headers()
    key = cache_key(source)
    folder = cache_root() / key[:2] / key
    so_path = folder / "kernel.so"
    if so_path.exists():
        return so_path
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / "lock")):
        if so_path.exists():  # another process built it while we waited
            return so_path
        cu_path = folder / "kernel.cu"
        cu_path.write_text(source)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="kernel.", suffix=".so.tmp")
        os.close(fd)
        cmd = [nvcc, *NVCC_FLAGS, *headers.flags(), str(cu_path), "-o", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.unlink(tmp)
            raise ChoiceFailed(f"{name}: nvcc ran past {COMPILE_TIMEOUT_S}s on {cu_path}") from None
        log = proc.stdout + proc.stderr
        (folder / "nvcc.log").write_text(" ".join(cmd) + "\n" + log)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise ChoiceFailed(
                f"{name}: nvcc failed (exit {proc.returncode}) on {cu_path}:\n{_tail(log)}"
            )
        if SERIALIZED_WGMMA in log:
            os.unlink(tmp)
            raise ChoiceFailed(
                f"{name}: ptxas serialised the wgmma instructions ({SERIALIZED_WGMMA}) in "
                f"{cu_path}; the kernel would run many times slower:\n{_tail(log)}"
            )
        os.replace(tmp, so_path)
    return so_path


def compile_many(
    sources: Sequence[tuple[str, str]], workers: int | None = None
) -> list[Path | ChoiceFailed]:
    """Compile ``(name, source)`` pairs in parallel nvcc processes.

    Returns, in order, the ``.so`` path or the ``ChoiceFailed`` of each; a
    failure never stops the others.
    """
    workers = workers or max(1, os.cpu_count() or 1)

    def one(item: tuple[str, str]) -> Path | ChoiceFailed:
        name, source = item
        try:
            return compile_source(source, name)
        except ChoiceFailed as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, sources))


def _tail(log: str, lines: int = 40) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])
