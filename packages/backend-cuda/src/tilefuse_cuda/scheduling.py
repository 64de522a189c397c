"""The CUDA C++ backend's ``KernelScheduling``: it owns GEMM templates only.

Ownership rule (see ``tilefuse.backend_selection``): pointwise and reduction kernels
belong to the backend that declares those capabilities (Triton); for a GEMM template,
every backend declaring ``template:gemm`` is asked whether it can render the fused
epilogue. This backend says yes exactly when its CUTLASS templates can express it,
and the autotuner then times its choices against everyone else's.
"""

from __future__ import annotations

from typing import Any

from tilefuse import plugin
from tilefuse.errors import CompileError

from .problem import Unsupported, analyse


class CudaScheduling:
    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(self, producer: Any, consumer: Any) -> plugin.Verdict:
        request = getattr(producer, "request", None)
        if request is None:
            return plugin.Verdict.no("the CUDA backend fuses only into its GEMM templates")
        op, inputs, layout, epilogue = request()
        plain = plugin.Epilogue((), (), epilogue.out_dtype)
        n_op = len(inputs) - len(epilogue.operands)
        try:
            analyse(op, inputs[:n_op], layout, plain)
        except Unsupported as exc:
            return plugin.Verdict.no(f"CUTLASS does not serve this GEMM ({exc})")
        try:
            analyse(op, inputs, layout, epilogue)
        except Unsupported as exc:
            return plugin.Verdict.no(f"CUTLASS cannot render this epilogue ({exc})")
        return plugin.Verdict.yes()

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return plugin.Verdict.no("the CUDA backend generates no pointwise kernels")

    def codegen(self, spec: plugin.KernelSpec) -> plugin.Kernel:
        raise CompileError(
            f"the CUDA backend generates only GEMM templates (template:gemm), not {spec.name}"
        )

    def codegen_template(self, template: Any, epilogue: Any) -> Any:
        raise CompileError(
            "CUTLASS kernels are chosen by tilefuse-autotune through tilefuse_cuda.provider"
        )
