"""GPT-2's LM-head GEMM (M x 768 x 50257, bf16): ``python bench/lm_head.py``.

At M = 512 (batch-1 GPT-2) and 4096, times ``torch.mm`` at the odd N (cuBLAS serves it
with 1-element-aligned kernels), ``plugin.ExternChoice`` on the transposed weight (read
in place: its aligned columns and the tail as two GEMMs into padded rows) and on a
row-major B (padded to a multiple of 8 columns), and the GEMM at the padded N alone,
with ``triton.testing.do_bench``; then checks both padded results against
``torch.mm``'s within bf16 tolerance.
"""

from __future__ import annotations

import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("lm_head.py needs a CUDA GPU")
        return 2
    for m in (512, 4096):
        _time_and_check(m, 768, 50257)
    return 0


def _time_and_check(m: int, k: int, n: int) -> None:
    import triton

    from tilefuse import extern_gemm, plugin

    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    row_major = w.t().contiguous()
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    choice = plugin.ExternChoice("mm")
    width = extern_gemm._padded_width("mm", w, out) or n
    padded = extern_gemm._pad_columns(w.t(), width)
    times = {
        "torch.mm": lambda: torch.mm(a, w.t()),
        "ExternChoice, w.t() read in place (aligned columns + tail, two GEMMs)": lambda: choice.run(
            a, w.t(), out=out
        ),
        "ExternChoice, row-major B (B padded)": lambda: choice.run(a, row_major, out=out),
        f"torch.mm at N={width} alone": lambda: torch.mm(a, padded),
    }
    for label, fn in times.items():
        print(f"LM head {m}x{k}x{n} bf16: {label}: {triton.testing.do_bench(fn):.4f} ms")
    expected = torch.mm(a, w.t())
    for b in (w.t(), row_major):
        choice.run(a, b, out=out)
        torch.testing.assert_close(out, expected, rtol=1.6e-2, atol=1e-3)


if __name__ == "__main__":
    sys.exit(main())
