"""Phase-one descriptor of the Triton backend: cheap, imports neither triton nor torch.

With ``TRITON_INTERPRET=1`` Triton runs kernels on CPU tensors through its
interpreter, so the backend then also serves ``cpu``: that is how machines
without a GPU check Triton code generation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from tilefuse import plugin


class TritonBackend:
    """The ``triton`` device backend: pointwise and reduction kernels."""

    @property
    def info(self) -> plugin.BackendInfo:
        interpreted = plugin.triton_interpreted()
        devices = ("cuda", "cpu") if interpreted else ("cuda",)
        capabilities = {
            plugin.CAP_POINTWISE, plugin.CAP_REDUCTION, plugin.CAP_TEMPLATE_GEMM,
            plugin.CAP_RANDOM,  # tl.rand, in the interpreter as on a GPU
            plugin.CAP_SOFTMAX_SUM,  # online, sharing the loop of the row's max
        }  # fmt: skip
        if not interpreted:
            # cuDNN's tensor-core convolutions are NHWC. Interpreted, the backend also
            # serves CPU tensors, for which it makes no such claim.
            capabilities.add(plugin.CAP_CHANNELS_LAST)
            # A GPU runs thousands of programs at once: one per output leaves it idle when a
            # long reduction has few outputs. The interpreter runs one program at a time.
            capabilities.add(plugin.CAP_SPLIT_REDUCTIONS)
        return plugin.BackendInfo(
            name="triton",
            api_version=plugin.API_VERSION,
            device_types=devices,
            capabilities=frozenset(capabilities),
            priority=10,
            description="Triton pointwise, reduction and GEMM-template kernels",
        )

    def availability(self) -> plugin.Availability:
        if importlib.util.find_spec("triton") is None:
            return plugin.Availability.unavailable("triton is not installed (pip install triton)")
        if plugin.triton_interpreted():
            return plugin.Availability.available("TRITON_INTERPRET=1: CPU tensors via interpreter")
        if not _cuda_device_present():
            return plugin.Availability.unavailable(
                "no CUDA device (set TRITON_INTERPRET=1 to run on CPU tensors)"
            )
        return plugin.Availability.available()

    def load(self) -> Callable[[plugin.CompileContext], Any]:
        from .scheduling import TritonScheduling

        return TritonScheduling


def _cuda_device_present() -> bool:
    # torch is imported by then in any compile; the CLI may call this without it.
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


BACKEND = TritonBackend()
