"""Compile the bench's GEMM workloads with tilefuse and print the compile report,
including the autotuner's summary line (who won, by how much against cuBLAS)."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import tilefuse


def main() -> int:
    dev, bf = "cuda", torch.bfloat16
    a = torch.randn(8192, 8192, device=dev, dtype=bf)
    b = torch.randn(8192, 8192, device=dev, dtype=bf)
    bias = torch.randn(8192, device=dev, dtype=bf)
    print(tilefuse.explain(lambda a, b, c: torch.relu(a @ b + c), a, b, bias), flush=True)
    x = torch.randn(4096, 4096, device=dev, dtype=bf)
    w1 = torch.randn(4096, 11008, device=dev, dtype=bf)
    w2 = torch.randn(11008, 4096, device=dev, dtype=bf)
    print(tilefuse.explain(lambda x, w1, w2: F.gelu(x @ w1) @ w2, x, w1, w2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
