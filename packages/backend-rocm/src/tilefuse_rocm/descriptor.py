"""Phase-one descriptor of the ROCm backend: cheap, imports no toolkit.

``availability()`` names everything missing at once (hipcc, a ROCm build of torch, a
device) so ``tilefuse backends`` tells the user the whole fix, not one step of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tilefuse import plugin


def missing_requirements() -> list[str]:
    """What this machine lacks for the ROCm backend (empty: everything is there).

    Never raises. torch is imported only if installed (it is already loaded wherever a graph
    is being compiled).
    """
    from .toolchain import find_hipcc

    missing = []
    if find_hipcc() is None:
        missing.append(
            "hipcc not found (install ROCm, or Debian's `hipcc libamdhip64-dev`; or set "
            "TILEFUSE_HIPCC)"
        )
    try:
        import torch
    except Exception:
        missing.append("torch is not installed")
        return missing
    if getattr(torch.version, "hip", None) is None:
        missing.append("torch is not a ROCm build (install torch from the ROCm wheel index)")
        missing.append("no ROCm device")
        return missing
    try:
        has_device = bool(torch.cuda.is_available())
    except Exception:
        has_device = False
    if not has_device:
        missing.append("no ROCm device visible to torch")
    return missing


class RocmBackend:
    """The ``rocm`` backend: HIP GEMM templates for AMD GPUs.

    It declares only ``template:gemm``; pointwise and reduction kernels on the same device
    belong to a backend that declares them (Triton). Its kernels reach graphs through the
    ``rocm`` autotune choice provider (``tilefuse_rocm.provider.PROVIDER``).
    """

    info = plugin.BackendInfo(
        name="rocm",
        api_version=plugin.API_VERSION,
        device_types=("cuda",),  # torch exposes ROCm GPUs as device type "cuda"
        capabilities=frozenset({plugin.CAP_TEMPLATE_GEMM}),
        priority=20,
        description="HIP C++ GEMM templates (Composable-Kernel style) compiled with hipcc",
    )

    def availability(self) -> plugin.Availability:
        try:
            missing = missing_requirements()
        except Exception as exc:  # the contract: never raise
            return plugin.Availability.unavailable(f"availability check failed: {exc!r}")
        from .toolchain import find_hipcc, target_arch

        if missing:
            hipcc = find_hipcc()
            found = [f"hipcc ok ({hipcc})"] if hipcc else []
            return plugin.Availability.unavailable("; ".join(found + missing))

        return plugin.Availability.available(f"--offload-arch={target_arch()}")

    def load(self) -> Callable[[plugin.CompileContext], Any]:
        from .scheduling import RocmScheduling

        return RocmScheduling


BACKEND = RocmBackend()
