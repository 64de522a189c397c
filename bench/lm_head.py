"""GPT-2's LM-head GEMM (4096 x 768 x 50257, bf16): ``python bench/lm_head.py``.

Times ``torch.mm`` at the odd N (cuBLAS serves it with 1-element-aligned kernels),
``plugin.ExternChoice`` (which pads N to a multiple of 8 and cuts the result back), and
the GEMM at the padded N alone, with ``triton.testing.do_bench``; then checks that the
padded result matches ``torch.mm``'s within bf16 tolerance.
"""

from __future__ import annotations

import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("lm_head.py needs a CUDA GPU")
        return 2
    import triton

    from tilefuse import extern_gemm, plugin

    m, k, n = 4096, 768, 50257
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    choice = plugin.ExternChoice("mm")
    width = extern_gemm._padded_width("mm", w, out) or n
    padded = extern_gemm._pad_columns(w.t(), width)
    eager = triton.testing.do_bench(lambda: torch.mm(a, w.t()))
    ours = triton.testing.do_bench(lambda: choice.run(a, w.t(), out=out))
    alone = triton.testing.do_bench(lambda: torch.mm(a, padded))
    print(f"LM head {m}x{k}x{n} bf16: torch.mm {eager:.3f} ms, ExternChoice (N padded to "
          f"{width}) {ours:.3f} ms, torch.mm at N={width} alone {alone:.3f} ms")  # fmt: skip
    choice.run(a, w.t(), out=out)
    torch.testing.assert_close(out, torch.mm(a, w.t()), rtol=1.6e-2, atol=1e-3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
