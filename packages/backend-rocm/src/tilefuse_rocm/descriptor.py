"""Phase-one descriptor of the ROCm backend: cheap, imports no toolkit."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from tilefuse import plugin


class RocmBackend:
    """The ``rocm`` backend: HIP GEMM templates for AMD GPUs."""

    info = plugin.BackendInfo(
        name="rocm",
        api_version=plugin.API_VERSION,
        device_types=("cuda",),  # torch exposes ROCm GPUs as device type "cuda"
        capabilities=frozenset({plugin.CAP_TEMPLATE_GEMM}),
        priority=20,
        description="HIP C++ GEMM templates (Composable-Kernel style) compiled with hipcc",
    )

    def availability(self) -> plugin.Availability:
        if shutil.which("hipcc") is None:
            return plugin.Availability.unavailable("hipcc not found on PATH")
        try:
            import torch
        except ImportError:
            return plugin.Availability.unavailable("torch is not installed")
        if getattr(torch.version, "hip", None) is None:
            return plugin.Availability.unavailable("torch is not a ROCm build")
        if not torch.cuda.is_available():
            return plugin.Availability.unavailable("no ROCm device")
        return plugin.Availability.available()

    def load(self) -> Callable[[plugin.CompileContext], Any]:
        raise NotImplementedError("the ROCm backend's scheduling is not built yet")


BACKEND = RocmBackend()
