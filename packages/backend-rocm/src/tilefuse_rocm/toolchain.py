"""Finding hipcc, its version, and the GPU architecture to compile for.

Everything here is cheap and never imports torch unless asked about the device. hipcc is
always run with ``HIP_PLATFORM=amd``: without it, hipcc picks the NVIDIA platform on a
machine that also has nvcc and compiles something else entirely.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_ARCH = "gfx942"
ARCH_ENV = "TILEFUSE_ROCM_ARCH"
HIPCC_ENV = "TILEFUSE_HIPCC"


def find_hipcc() -> str | None:
    """Path of hipcc: ``$TILEFUSE_HIPCC``, then ``PATH``, then ``$ROCM_PATH/bin`` (or
    ``/opt/rocm/bin``); ``None`` when there is none."""
    explicit = os.environ.get(HIPCC_ENV, "").strip()
    if explicit:
        return explicit if Path(explicit).is_file() else None
    found = shutil.which("hipcc")
    if found:
        return found
    root = os.environ.get("ROCM_PATH", "").strip() or "/opt/rocm"
    candidate = Path(root) / "bin" / "hipcc"
    return str(candidate) if candidate.is_file() else None


def hipcc_env() -> dict[str, str]:
    """The environment hipcc runs in (AMD platform forced)."""
    env = dict(os.environ)
    env["HIP_PLATFORM"] = "amd"
    return env


@functools.cache
def hipcc_version(hipcc: str) -> str:
    """hipcc's version banner (HIP and clang versions): it enters every kernel cache key.

    Returns ``"unknown"`` when hipcc cannot report it (the compile will then say why).
    """
    try:
        proc = subprocess.run(
            [hipcc, "--version"],
            capture_output=True,
            text=True,
            env=hipcc_env(),
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "version" in ln.lower()]
    return "; ".join(keep) or "unknown"


def device_arch() -> str | None:
    """The gfx target of the current ROCm device (e.g. ``"gfx942:sramecc+:xnack-"``), or
    ``None`` without a ROCm torch and device. Never raises."""
    try:
        import torch

        if getattr(torch.version, "hip", None) is None or not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        name = getattr(props, "gcnArchName", "") or ""
        return name or None
    except Exception:
        return None


def target_arch() -> str:
    """The ``--offload-arch`` to compile for: ``$TILEFUSE_ROCM_ARCH``, else the current
    device's, else ``DEFAULT_ARCH``."""
    explicit = os.environ.get(ARCH_ENV, "").strip()
    if explicit:
        return explicit
    return device_arch() or DEFAULT_ARCH


def base_arch(arch: str) -> str:
    """``"gfx942:sramecc+:xnack-"`` -> ``"gfx942"``."""
    return arch.split(":", 1)[0]
