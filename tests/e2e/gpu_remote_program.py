"""Run by ``test_gpu_remote_cache.py`` in a fresh interpreter on a CUDA machine: compile a
pointwise graph and a reduction graph (Triton kernels, no GEMM), check both against eager
and print ``tilefuse.stats()`` as one JSON line. The caller sets TILEFUSE_CACHE_DIR,
TRITON_CACHE_DIR and TILEFUSE_REMOTE_CACHE: each "machine" has caches of its own.
"""

from __future__ import annotations

import json

import torch

import tilefuse


def pointwise(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x * 1.5) - x


def row_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x * 0.5, dim=-1)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(37, 300, device="cuda")
    for fn in (pointwise, row_softmax):
        got = torch.compile(fn, backend="tilefuse")(x)
        torch.testing.assert_close(got, fn(x))
    print(json.dumps(tilefuse.stats()))


if __name__ == "__main__":
    main()
