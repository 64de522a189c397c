"""Compile rendered ``.cu`` sources into shared objects with nvcc, cached on disk.

Cache layout (``tilefuse.plugin.build_artifact``, kind ``"cuda"``):
``<cache>/cuda/<key[:2]>/<key>/`` holding ``kernel.cu``, ``kernel.so``, its hash record
``kernel.so.sha256`` and ``nvcc.log``; ``key`` hashes the source, the nvcc version, the
CUTLASS version and the flags. The rendered source carries no problem size (sizes and
strides are kernel arguments), so one entry serves every shape of its class, in every
process sharing the cache directory. The core helper locks the entry, publishes by atomic
rename and returns a ``.so`` only when its bytes match the recorded hash.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed

from .settings import COMPILE_BUDGET_ENV, MAX_CANDIDATES_ENV
from .toolchain import cutlass_headers, find_nvcc, nvcc_version

ARCH = "sm_90a"
# Only the sm_90a cubin: ``-arch=sm_90a`` would also run cicc for compute_90 PTX that no
# GPU of this backend ever loads (16% of a cold build, measured: 122 s -> 102 s on 2 cores).
# ``-O3`` is the host code's level only; device code is optimised at the default levels.
NVCC_FLAGS = (
    "-std=c++17",
    "-O3",
    "-DNDEBUG",
    f"-gencode=arch=compute_{ARCH[3:]},code={ARCH}",
    "--expt-relaxed-constexpr",
    "-shared",
    "-Xcompiler",
    "-fPIC",
)
# ptxas warns C7510 ("wgmma.mma_async instructions are serialized") when it had to
# serialise the warp-group MMAs: the kernel runs, many times slower. Refuse it.
SERIALIZED_WGMMA = "C7510"
COMPILE_TIMEOUT_S = 600


KIND = "cuda"


def cache_key(source: str) -> str:
    """Content hash of everything that determines the compiled object."""
    h = hashlib.sha256()
    for part in (source, nvcc_version(), cutlass_headers().version, " ".join(NVCC_FLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_source(source: str, name: str = "kernel", deadline: float | None = None) -> Path:
    """The path of the compiled ``.so`` for ``source``, building it unless the cache holds a
    copy whose bytes match the hash recorded when it was built (a planted or changed file is
    rebuilt, never returned).

    ``deadline`` (``time.time()`` seconds): when a build is needed after it, raise
    ``ChoiceFailed`` instead of starting nvcc (the compile budget is spent); a cached
    ``.so`` is returned whatever the time.

    Raises ``ChoiceFailed`` (with the source's path and nvcc's output) when nvcc
    fails, times out or reports serialised wgmma (C7510); ``ToolchainMissing``
    when nvcc or the CUTLASS headers are absent; ``CacheError`` when the cache
    directory is unusable.
    """
    nvcc = find_nvcc()
    headers = cutlass_headers()

    def build(folder: Path, out: Path) -> None:
        if deadline is not None and time.time() > deadline:
            raise ChoiceFailed(
                f"{name}: not built, the compile budget ({COMPILE_BUDGET_ENV}) was spent "
                f"before its nvcc build could start; raise {COMPILE_BUDGET_ENV}, or lower "
                f"{MAX_CANDIDATES_ENV} so that fewer configurations are built"
            )
        cu_path = folder / "kernel.cu"
        plugin.atomic_write(cu_path, source)
        cmd = [nvcc, *NVCC_FLAGS, *headers.flags(), str(cu_path), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ChoiceFailed(f"{name}: nvcc ran past {COMPILE_TIMEOUT_S}s on {cu_path}") from None
        log = proc.stdout + proc.stderr
        plugin.atomic_write(folder / "nvcc.log", " ".join(cmd) + "\n" + log)
        if proc.returncode != 0:
            raise ChoiceFailed(
                f"{name}: nvcc failed (exit {proc.returncode}) on {cu_path}:\n{_tail(log)}"
            )
        if SERIALIZED_WGMMA in log:
            raise ChoiceFailed(
                f"{name}: ptxas serialised the wgmma instructions ({SERIALIZED_WGMMA}) in "
                f"{cu_path}; the kernel would run many times slower:\n{_tail(log)}"
            )

    return plugin.build_artifact(KIND, cache_key(source), "kernel.so", build)


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
