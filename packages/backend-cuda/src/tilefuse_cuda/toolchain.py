"""Where the CUDA toolchain lives: nvcc, its version, the CUTLASS headers, the GPU.

Every function here is cheap, caches nothing that can change under a test
(except the nvcc version, keyed by path) and never imports torch at module level.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tilefuse.errors import CompileError

CUTLASS_DIST = "nvidia-cutlass"
CUTLASS_INSTALL_HINT = "pip install nvidia-cutlass==4.2.0.0"


class ToolchainMissing(CompileError):
    """nvcc or the CUTLASS headers are not installed; the message says how to fix it."""


@dataclass(frozen=True)
class CutlassHeaders:
    """The two include roots a CUTLASS 3 GEMM needs, and the wheel's version."""

    version: str
    include: Path  # cutlass/..., cute/...
    util_include: Path  # cutlass/util/packed_stride.hpp

    def flags(self) -> list[str]:
        return [f"-I{self.include}", f"-I{self.util_include}"]


def find_nvcc() -> str:
    """The nvcc path (``$PATH``, then ``/usr/local/cuda/bin``); raises ``ToolchainMissing``."""
    found = shutil.which("nvcc")
    if found:
        return found
    fallback = Path("/usr/local/cuda/bin/nvcc")
    if fallback.exists():
        return str(fallback)
    raise ToolchainMissing(
        "nvcc was not found on PATH or in /usr/local/cuda/bin: install the CUDA toolkit "
        "(12.4 or newer) and put its bin/ on PATH"
    )


@functools.lru_cache(maxsize=8)
def _nvcc_version_of(nvcc: str) -> str:
    proc = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"release (\d+\.\d+), V([\d.]+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise ToolchainMissing(f"{nvcc} --version failed or printed no release: {proc.stdout!r}")
    return match.group(2)


def nvcc_version() -> str:
    """The full nvcc version (``"13.0.88"``); it enters every kernel cache key."""
    return _nvcc_version_of(find_nvcc())


def cutlass_headers() -> CutlassHeaders:
    """The CUTLASS C++ tree shipped in the ``nvidia-cutlass`` wheel.

    Found through the installed distribution's metadata, without importing
    ``cutlass_library`` (whose import pulls in cuda-python and scipy).
    Raises ``ToolchainMissing`` naming the package when it is absent or incomplete.
    """
    try:
        dist = importlib.metadata.distribution(CUTLASS_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ToolchainMissing(
            f"the CUTLASS C++ headers come from the {CUTLASS_DIST!r} package, which is not "
            f"installed: run `{CUTLASS_INSTALL_HINT}` (add --no-deps to skip its Python "
            "dependencies, which the headers do not need)"
        ) from None
    root = Path(str(dist.locate_file("cutlass_library/source")))
    headers = CutlassHeaders(
        version=dist.version,
        include=root / "include",
        util_include=root / "tools" / "util" / "include",
    )
    for needed in (
        headers.include / "cutlass" / "gemm" / "collective" / "collective_builder.hpp",
        headers.util_include / "cutlass" / "util" / "packed_stride.hpp",
    ):
        if not needed.is_file():
            raise ToolchainMissing(
                f"{CUTLASS_DIST} {dist.version} is installed but {needed} is missing: "
                f"reinstall it with `{CUTLASS_INSTALL_HINT}`"
            )
    return headers


def sm90_device_reason(device: str = "cuda") -> str | None:
    """``None`` when ``device`` is a CUDA GPU of compute capability 9.0, else why not.

    Imports torch lazily; never raises.
    """
    try:
        import torch

        if not device.startswith("cuda"):
            return f"device {device!r} is not a CUDA device"
        if not torch.cuda.is_available():
            return "no CUDA device"
        major, minor = torch.cuda.get_device_capability(torch.device(device))
    except Exception as exc:  # a broken driver must not break discovery
        return f"cannot query the CUDA device: {exc}"
    if (major, minor) != (9, 0):
        return f"{device} has compute capability {major}.{minor}; these kernels need sm_90"
    return None
