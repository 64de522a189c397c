"""Build rendered HIP sources into shared objects with hipcc, cached on disk.

Cache layout: ``tilefuse.config.cache_dir()/"rocm"/<key[:2]>/<key>.{hip,so}`` where ``key``
hashes the source, the hipcc version banner, the target architecture and the flags. Writers
take ``<key>.lock`` (filelock) and publish with an atomic rename, so concurrent processes
building the same kernel do the work once and never see a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from tilefuse.codegen.kernel_cache import cache_subdir
from tilefuse.errors import ChoiceFailed

from . import toolchain

FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared")
COMPILE_TIMEOUT_S = 600
T = TypeVar("T")


def cache_root() -> Path:
    """The ROCm kernel cache directory (created on demand; ``CacheError`` if it cannot be)."""
    return cache_subdir("rocm")


def cache_key(source: str, arch: str, hipcc_version: str, flags: Sequence[str] = FLAGS) -> str:
    """Content hash of everything that determines the built object (never file names)."""
    h = hashlib.sha256()
    for part in (source, arch, hipcc_version, " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_source(source: str, arch: str | None = None, name: str = "kernel") -> Path:
    """Path of the shared object built from ``source`` for ``arch`` (default
    ``toolchain.target_arch()``), compiling it unless the cache already holds it.

    Raises ``ChoiceFailed`` when hipcc is missing, fails (the message names the kept source
    file and shows hipcc's diagnostics) or times out.
    """
    hipcc = toolchain.find_hipcc()
    if hipcc is None:
        raise ChoiceFailed(
            f"{name}: hipcc not found; install ROCm (or Debian's `hipcc libamdhip64-dev`) or "
            f"set {toolchain.HIPCC_ENV}"
        )
    arch = arch or toolchain.target_arch()
    key = cache_key(source, arch, toolchain.hipcc_version(hipcc))
    folder = cache_root() / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    so_path = folder / f"{key}.so"
    if so_path.is_file():
        return so_path
    src_path = folder / f"{key}.hip"
    with FileLock(str(folder / f"{key}.lock")):
        if so_path.is_file():  # another process built it while we waited
            return so_path
        _atomic_write(src_path, source)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".so", dir=folder)
        os.close(fd)
        cmd = [hipcc, *FLAGS, f"--offload-arch={arch}", str(src_path), "-o", tmp]
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
            Path(tmp).unlink(missing_ok=True)
            raise ChoiceFailed(
                f"{name}: hipcc ran past {COMPILE_TIMEOUT_S}s on {src_path}"
            ) from None
        if proc.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            diag = (proc.stderr + proc.stdout).strip()[-4000:]
            raise ChoiceFailed(
                f"{name}: hipcc failed (exit {proc.returncode}) compiling {src_path} for {arch}:"
                f"\n{diag}"
            )
        os.replace(tmp, so_path)
    return so_path


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


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
