"""Phase-two object of the ROCm backend (``RocmBackend.load()`` returns ``RocmScheduling``).

The backend generates GEMM templates only, through its autotune choice provider
(``tilefuse_rocm.provider``, whose ``accepts`` answers for epilogues). It refuses pointwise
fusion (another backend owns those kernels on the device).
"""

from __future__ import annotations

from tilefuse import plugin
from tilefuse.errors import CompileError

_ONLY_GEMM = "the rocm backend generates GEMM templates only; pointwise kernels belong elsewhere"


class RocmScheduling:
    """``plugin.KernelScheduling`` for one compiled graph on one ROCm device."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(
        self, producer: plugin.FusionQuery, consumer: plugin.FusionQuery
    ) -> plugin.Verdict:
        return plugin.Verdict.no(_ONLY_GEMM)

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return plugin.Verdict.no(_ONLY_GEMM)

    def codegen(self, spec: plugin.KernelSpec) -> plugin.Kernel:
        raise CompileError(f"{_ONLY_GEMM}; cannot render kernel {spec.name} ({spec.describe()})")
