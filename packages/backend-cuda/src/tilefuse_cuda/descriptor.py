"""Phase-one descriptor of the CUDA C++ backend: cheap, imports no toolkit.

Importing this module reads no CUDA state; ``availability()`` looks for nvcc,
the CUTLASS headers (the ``nvidia-cutlass`` wheel) and an sm_90 GPU, and says
which are missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tilefuse import plugin


class CudaBackend:
    """The ``cuda`` backend: owns the CUTLASS GEMM template nodes it produced.

    Its kernels reach graphs through the autotuner (``tilefuse_cuda.provider.PROVIDER``
    in the ``tilefuse.autotune.choices`` group); ``load()`` has no scheduling of its own yet.
    """

    info = plugin.BackendInfo(
        name="cuda",
        api_version=plugin.API_VERSION,
        device_types=("cuda",),
        capabilities=frozenset({plugin.CAP_TEMPLATE_GEMM}),
        priority=20,
        description="CUTLASS 3.x GEMM templates (sm_90a) compiled with nvcc",
    )

    def availability(self) -> plugin.Availability:
        """``ok`` when nvcc, the CUTLASS headers and an sm_90 GPU are all present.

        The reason lists each of the three, e.g. ``"nvcc 13.0.88 ok; cutlass headers
        ok (nvidia-cutlass 4.2.0.0); no CUDA device"``. Never raises.
        """
        parts: list[str] = []
        ok = True
        try:
            from .toolchain import (
                ToolchainMissing,
                cutlass_headers,
                nvcc_version,
                sm90_device_reason,
            )
        except Exception as exc:  # a broken install must not break `tilefuse backends`
            return plugin.Availability.unavailable(f"tilefuse_cuda failed to import: {exc}")
        try:
            parts.append(f"nvcc {nvcc_version()} ok")
        except Exception as exc:  # ToolchainMissing, or nvcc itself broken
            ok = False
            parts.append(f"no nvcc ({str(exc).split(':')[0]})")
        try:
            headers = cutlass_headers()
            parts.append(f"cutlass headers ok (nvidia-cutlass {headers.version})")
        except ToolchainMissing:
            ok = False
            parts.append("no cutlass headers (pip install nvidia-cutlass)")
        reason = sm90_device_reason("cuda")
        if reason is None:
            parts.append("sm_90 GPU ok")
        else:
            ok = False
            parts.append(reason)
        text = "; ".join(parts)
        return plugin.Availability.available(text) if ok else plugin.Availability.unavailable(text)

    def load(self) -> Callable[[plugin.CompileContext], Any]:
        from .scheduling import CudaScheduling

        return CudaScheduling


BACKEND = CudaBackend()
