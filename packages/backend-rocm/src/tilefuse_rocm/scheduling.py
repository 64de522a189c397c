"""Phase-two object of the ROCm backend (``RocmBackend.load()`` returns ``RocmScheduling``).

The backend generates GEMM templates only. It refuses pointwise fusion (another backend owns
those kernels on the device) and builds GEMMs through its autotune choices; a template
reaching ``codegen_template`` directly is refused with a typed error saying so.
"""

from __future__ import annotations

from typing import Any

from tilefuse import plugin
from tilefuse.errors import CompileError

_ONLY_GEMM = "the rocm backend generates GEMM templates only; pointwise kernels belong elsewhere"


class RocmScheduling:
    """``plugin.KernelScheduling`` for one compiled graph on one ROCm device."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(self, producer: Any, consumer: Any) -> plugin.Verdict:
        return plugin.Verdict.no(_ONLY_GEMM)

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return plugin.Verdict.no(_ONLY_GEMM)

    def codegen(self, spec: plugin.KernelSpec) -> plugin.Kernel:
        raise CompileError(f"{_ONLY_GEMM}; cannot render kernel {spec.name} ({spec.describe()})")

    def codegen_template(self, template: Any, epilogue: Any) -> plugin.Kernel:
        raise CompileError(
            "the rocm backend builds GEMMs through the autotuner (choice provider 'rocm'); "
            "direct template codegen is not implemented: enable autotuning "
            "(TILEFUSE_AUTOTUNE=default) or select another backend with TILEFUSE_BACKENDS"
        )
