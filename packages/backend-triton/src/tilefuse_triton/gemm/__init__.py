"""The Triton GEMM template (mm, addmm, bmm with a fused epilogue) and its autotune provider.

Public API: ``render_gemm`` (module source for one config, reused by the
compiler), ``GemmConfig``, ``search_space``/``device_traits`` (the configs worth
trying), ``TritonGemmChoice`` and ``PROVIDER`` (the ``tilefuse.autotune.choices``
entry point). Importing this package imports neither triton nor torch.
"""

from .choice import TritonGemmChoice
from .config import DeviceTraits, GemmConfig, device_traits, search_space
from .problem import GemmProblem, Unsupported
from .provider import PROVIDER, TritonGemmProvider
from .template import kernel_name, render_gemm

__all__ = [
    "PROVIDER",
    "DeviceTraits",
    "GemmConfig",
    "GemmProblem",
    "TritonGemmChoice",
    "TritonGemmProvider",
    "Unsupported",
    "device_traits",
    "kernel_name",
    "render_gemm",
    "search_space",
]
