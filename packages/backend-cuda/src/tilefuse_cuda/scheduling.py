"""The CUDA C++ backend's ``KernelScheduling``: it owns GEMM templates only.

Ownership rule (see ``tilefuse.backend_selection``): pointwise and reduction kernels
belong to the backend that declares those capabilities (Triton). GEMM templates reach
the autotuner through this package's choice provider (``tilefuse_cuda.provider``),
which also answers whether a CUTLASS kernel can fuse an epilogue
(``CutlassChoiceProvider.accepts``). This scheduling renders no kernel of its own.
"""

from __future__ import annotations

from tilefuse import plugin
from tilefuse.errors import CompileError

_NO_POINTWISE = "the CUDA backend generates no pointwise kernels"


class CudaScheduling:
    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(
        self, producer: plugin.FusionQuery, consumer: plugin.FusionQuery
    ) -> plugin.Verdict:
        return plugin.Verdict.no(_NO_POINTWISE)

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return plugin.Verdict.no(_NO_POINTWISE)

    def codegen(self, spec: plugin.KernelSpec) -> plugin.Kernel:
        raise CompileError(
            f"the CUDA backend generates only GEMM templates (template:gemm), not {spec.name}"
        )
