"""GPT-2's LM-head GEMM (M x 768 x 50257, bf16): ``python bench/lm_head.py``.

At M = 512 (batch-1 GPT-2) and 4096, times ``torch.mm`` at the odd N (cuBLAS serves it
with 1-element-aligned kernels), ``plugin.ExternChoice`` on the transposed weight (read
in place: its aligned columns and the tail as two GEMMs into padded rows) and on a
row-major B (padded to a multiple of 8 columns), and the GEMM at the padded N alone,
with ``triton.testing.do_bench``; then checks both padded results against
``torch.mm``'s within bf16 tolerance. Then the two backward GEMMs at M = 4096, reading
the logits' gradient with dense and with padded rows, as one GEMM and in aligned blocks.
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
    _time_backward(4096, 768, 50257)
    return 0


def _time_backward(m: int, k: int, n: int) -> None:
    """The head's two backward GEMMs, reading the logits' gradient ``g`` (``m x n``) with
    dense rows (what eager has) and with padded rows (``frontend.gemm_rows``), run
    as one GEMM or in aligned blocks (``extern_gemm._run_in_blocks``)."""
    import triton

    from tilefuse import extern_gemm, plugin

    width = extern_gemm.padded_width(torch.bfloat16, n, m * n) or n
    dense = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    padded = torch.empty(m, width, device="cuda", dtype=torch.bfloat16)[:, :n]
    padded.copy_(dense)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    choice = plugin.ExternChoice("mm")
    grad_x = torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
    grad_w = torch.empty(n, k, device="cuda", dtype=torch.bfloat16)
    times = {
        "grad_x = g @ w, dense g": lambda: torch.mm(dense, w),
        "grad_x = g @ w, padded g, one GEMM": lambda: torch.mm(padded, w),
        "grad_x = g @ w, padded g, blocks of K": lambda: choice.run(padded, w, out=grad_x),
        "grad_w = g.t() @ x, dense g": lambda: torch.mm(dense.t(), x),
        "grad_w = g.t() @ x, padded g, one GEMM": lambda: torch.mm(padded.t(), x),
        "grad_w = g.t() @ x, padded g, blocks of M": lambda: choice.run(padded.t(), x, out=grad_w),
    }
    for label, fn in times.items():
        print(f"LM head backward {m}x{k}x{n} bf16: {label}: {triton.testing.do_bench(fn):.4f} ms")
    assert extern_gemm._aligned_block("mm", padded, w) == ("k", n - n % 8)
    assert extern_gemm._aligned_block("mm", padded.t(), x) == ("m", n - n % 8)
    # Against the float32 product: eager's bf16 GEMM may reduce in reduced precision.
    for out, a, b in ((grad_x, padded, w), (grad_w, padded.t(), x)):
        choice.run(a, b, out=out)
        exact = torch.mm(a.float(), b.float())
        ours = (out.float() - exact).abs().max().item()
        eager = (torch.mm(a, b).float() - exact).abs().max().item()
        print(
            f"max abs error vs float32 {tuple(out.shape)}: blocks {ours:.4g}, torch.mm {eager:.4g}"
        )


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
