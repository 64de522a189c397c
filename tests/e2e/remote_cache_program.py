"""Run as a script by ``test_remote_cache.py``: compile one small program and print
``tilefuse.stats()`` and the compile time as one JSON line.

The program has two graphs: a pointwise one built into a shared object by the example C++
backend (``acme``, through ``plugin.build_artifact``), and a GEMM with a ReLU epilogue that
``TILEFUSE_AUTOTUNE=max`` benchmarks (Triton's interpreter, CPU tensors). Both results are
checked against eager. The caller sets TILEFUSE_CACHE_DIR, TILEFUSE_REMOTE_CACHE and
TILEFUSE_STRICT; the example backend must be installed (``nox -s tests`` installs it).
"""

from __future__ import annotations

import json
import os
import time

import torch

import tilefuse


def pointwise(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * 2.0) + 1.0


def gemm_relu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(a @ b)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(37)
    a, b = torch.randn(8, 16), torch.randn(16, 8)
    start = time.perf_counter()
    os.environ["TILEFUSE_BACKENDS"] = "acme"
    torch.testing.assert_close(torch.compile(pointwise, backend="tilefuse")(x), pointwise(x))
    os.environ["TILEFUSE_BACKENDS"] = "triton"
    os.environ["TILEFUSE_AUTOTUNE"] = "max"
    got = torch.compile(gemm_relu, backend="tilefuse")(a, b)
    torch.testing.assert_close(got, gemm_relu(a, b))
    seconds = time.perf_counter() - start
    print(json.dumps({"stats": tilefuse.stats(), "seconds": seconds}))


if __name__ == "__main__":
    main()
