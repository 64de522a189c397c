"""Phase-one descriptor of the CUDA C++ backend: cheap, imports no toolkit."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from tilefuse import plugin


class CudaBackend:
    """The ``cuda`` backend: owns the CUTLASS GEMM template nodes it produced."""

    info = plugin.BackendInfo(
        name="cuda",
        api_version=plugin.API_VERSION,
        device_types=("cuda",),
        capabilities=frozenset({plugin.CAP_TEMPLATE_GEMM}),
        priority=20,
        description="CUTLASS 3.x GEMM templates (sm_90a) compiled with nvcc",
    )

    def availability(self) -> plugin.Availability:
        if shutil.which("nvcc") is None:
            return plugin.Availability.unavailable("nvcc not found on PATH")
        try:
            import torch
        except ImportError:
            return plugin.Availability.unavailable("torch is not installed")
        if not torch.cuda.is_available():
            return plugin.Availability.unavailable("no CUDA device")
        return plugin.Availability.available()

    def load(self) -> Callable[[plugin.CompileContext], Any]:
        raise NotImplementedError("the CUDA C++ backend's scheduling is not built yet")


BACKEND = CudaBackend()
