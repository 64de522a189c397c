"""The machine's floor: measured copy bandwidth and matmul rate, and the % of floor math.

A workload declares the minimal bytes it must move (inputs read once, outputs written once) and
the matrix-multiply flops it must do. Its floor time is the larger of the two lower bounds
``bytes / copy_bandwidth`` and ``flops / matmul_rate``; % of floor is that time over the measured
time, so 100% means "as fast as this machine's copy or cuBLAS GEMM could possibly allow".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.timing import Timer

GPU_COPY_BYTES = 1 << 30  # 1 GiB tensor: large enough that L2 plays no part
GPU_MM_SIZE = 8192
GPU_MM_FLOPS = 2 * GPU_MM_SIZE**3  # of one floor probe
SMOKE_COPY_BYTES = 16 << 20
SMOKE_MM_SIZE = 256
MM_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Floors:
    """Measured floors. Rates are per second; the rest describes how they were measured."""

    copy_bytes_per_s: float
    mm_flops_per_s: float
    copy_ms: float
    copy_tensor_bytes: int
    mm_ms: float
    mm_size: int
    mm_dtype: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["copy_gb_per_s"] = self.copy_bytes_per_s / 1e9
        data["mm_tflops"] = self.mm_flops_per_s / 1e12
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Floors:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def floor_seconds(
    bytes_moved: float, flops: float, copy_bytes_per_s: float, mm_flops_per_s: float
) -> float:
    """Lower bound on a workload's time: max(bytes / bandwidth, flops / matmul rate).

    Raises ``ValueError`` when a rate is not positive or a count is negative.
    """
    if copy_bytes_per_s <= 0 or mm_flops_per_s <= 0:
        raise ValueError(
            f"floor rates must be positive, got copy={copy_bytes_per_s}, mm={mm_flops_per_s}"
        )
    if bytes_moved < 0 or flops < 0:
        raise ValueError(f"bytes and flops must be >= 0, got {bytes_moved}, {flops}")
    return max(bytes_moved / copy_bytes_per_s, flops / mm_flops_per_s)


def pct_of_floor(
    bytes_moved: float,
    flops: float,
    ms: float,
    copy_bytes_per_s: float,
    mm_flops_per_s: float,
) -> float:
    """100 * floor time / measured time, with ``ms`` the measured time in milliseconds.

    Raises ``ValueError`` when ``ms`` is not positive (a time of zero cannot be a measurement).
    """
    if ms <= 0:
        raise ValueError(f"measured time must be positive, got {ms} ms")
    floor = floor_seconds(bytes_moved, flops, copy_bytes_per_s, mm_flops_per_s)
    return 100.0 * floor / (ms / 1e3)


def measure_copy(timer: Timer, nbytes: int) -> tuple[float, float]:
    """Device-to-device copy of an ``nbytes`` tensor: (bytes per second, median ms).

    A copy reads and writes every byte, so it moves ``2 * nbytes``.
    """
    src = torch.ones(nbytes, dtype=torch.uint8, device=timer.device)
    dst = torch.empty_like(src)
    ms = timer.median_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms / 1e3), ms


def matmul_probe(timer: Timer, n: int, dtype: torch.dtype = MM_DTYPE) -> Callable[[], float]:
    """A reusable ``n x n x n`` matmul timing (cuBLAS on CUDA): each call returns its median
    ms at that moment. The operands are made once, so a probe costs only its timing."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=timer.device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=timer.device, dtype=dtype)
    out = torch.empty(n, n, device=timer.device, dtype=dtype)
    return lambda: timer.median_ms(lambda: torch.mm(a, b, out=out))


def measure_matmul(timer: Timer, n: int, dtype: torch.dtype = MM_DTYPE) -> tuple[float, float]:
    """``n x n x n`` matmul (cuBLAS on CUDA): (flops per second, median ms); flops = 2 n^3."""
    ms = matmul_probe(timer, n, dtype)()
    return 2 * n**3 / (ms / 1e3), ms


def measure_floors(timer: Timer, smoke: bool) -> Floors:
    """Measure both floors on ``timer.device`` (tiny sizes when ``smoke``)."""
    copy_bytes = SMOKE_COPY_BYTES if smoke else GPU_COPY_BYTES
    mm_size = SMOKE_MM_SIZE if smoke else GPU_MM_SIZE
    copy_rate, copy_ms = measure_copy(timer, copy_bytes)
    mm_rate, mm_ms = measure_matmul(timer, mm_size)
    timer.free_memory()
    return Floors(
        copy_bytes_per_s=copy_rate,
        mm_flops_per_s=mm_rate,
        copy_ms=copy_ms,
        copy_tensor_bytes=copy_bytes,
        mm_ms=mm_ms,
        mm_size=mm_size,
        mm_dtype=str(MM_DTYPE).removeprefix("torch."),
    )
