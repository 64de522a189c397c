"""Build rendered HIP sources into shared objects with hipcc, cached on disk.

Cache layout (``tilefuse.plugin.build_artifact``, kind ``"rocm"``):
``<cache>/rocm/<key[:2]>/<key>/`` holding ``kernel.hip``, ``kernel.so`` and its hash record
``kernel.so.sha256``; ``key`` hashes the source, the hipcc version banner, the target
architecture and the flags. The core helper locks the entry (concurrent processes build it
once), publishes by atomic rename and returns a ``.so`` only when its bytes match the record.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed

from . import toolchain

FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared")
COMPILE_TIMEOUT_S = 600
T = TypeVar("T")
KIND = "rocm"


def cache_key(source: str, arch: str, hipcc_version: str, flags: Sequence[str] = FLAGS) -> str:
    """Content hash of everything that determines the built object (never file names)."""
    h = hashlib.sha256()
    for part in (source, arch, hipcc_version, " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_source(source: str, arch: str | None = None, name: str = "kernel") -> Path:
    """Path of the shared object built from ``source`` for ``arch`` (default
    ``toolchain.target_arch()``), compiling it unless the cache holds a copy whose bytes
    match the hash recorded when it was built (a planted or changed file is rebuilt).

    Raises ``ChoiceFailed`` when hipcc is missing, fails (the message names the kept source
    file and shows hipcc's diagnostics) or times out; ``CacheError`` when the cache directory
    is unusable.
    """
    hipcc = toolchain.find_hipcc()
    if hipcc is None:
        raise ChoiceFailed(
            f"{name}: hipcc not found; install ROCm (or Debian's `hipcc libamdhip64-dev`) or "
            f"set {toolchain.HIPCC_ENV}"
        )
    arch = arch or toolchain.target_arch()

    def build(folder: Path, out: Path) -> None:
        src_path = folder / "kernel.hip"
        plugin.atomic_write(src_path, source)
        cmd = [hipcc, *FLAGS, f"--offload-arch={arch}", str(src_path), "-o", str(out)]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=toolchain.hipcc_env(),
                timeout=COMPILE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChoiceFailed(
                f"{name}: hipcc ran past {COMPILE_TIMEOUT_S}s on {src_path}"
            ) from None
        if proc.returncode != 0:
            diag = (proc.stderr + proc.stdout).strip()[-4000:]
            raise ChoiceFailed(
                f"{name}: hipcc failed (exit {proc.returncode}) compiling {src_path} for {arch}:"
                f"\n{diag}"
            )

    key = cache_key(source, arch, toolchain.hipcc_version(hipcc))
    return plugin.build_artifact(KIND, key, "kernel.so", build)


def compile_all(
    jobs: Iterable[T], build: Callable[[T], object], workers: int | None = None
) -> list[tuple[T, ChoiceFailed | None]]:
    """Run ``build(job)`` for every job on a thread pool (hipcc does the work in its own
    process). Returns each job with ``None`` or the ``ChoiceFailed`` it raised, in order."""
    items = list(jobs)
    workers = workers or max(1, min(len(items), os.cpu_count() or 1))

    def one(job: T) -> ChoiceFailed | None:
        try:
            build(job)
        except ChoiceFailed as exc:
            return exc
        return None

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(zip(items, pool.map(one, items), strict=True))
