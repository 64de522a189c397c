"""The rendered epilogue statements mean what ``Epilogue.apply_reference`` says.

The generated C++ lines are compiled for the host with a C++ compiler (g++ or clang++,
present wherever nvcc is) inside a tiny harness and compared against the reference on real
values; no GPU or hipcc needed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from tests.backend_rocm.cases import UNARY_KINDS, spec
from tilefuse import plugin
from tilefuse_rocm.epilogue import check_epilogue, render_epilogue

CXX = shutil.which("g++") or shutil.which("clang++")

HARNESS = r"""
#include <math.h>
#include <cstdio>
#include <cstring>
static float tf_bf16_to_float(unsigned short v) {
    unsigned int u = static_cast<unsigned int>(v) << 16; float f; std::memcpy(&f, &u, 4);
    return f;
}
struct Args { const void* ops[2]; long long s_ops[2][3]; };
static float apply(float x, const Args& args, long long bz, long long m, long long n) {
%STEPS%
    return x;
}
int main() {
    const int M = %M%, N = %N%;
    static float acc[%M% * %N%];
    static float op0[%N%];
    static unsigned short op1[%M% * %N%];
    for (int i = 0; i < M * N; ++i) if (std::scanf("%f", &acc[i]) != 1) return 1;
    for (int i = 0; i < N; ++i) if (std::scanf("%f", &op0[i]) != 1) return 1;
    for (int i = 0; i < M * N; ++i) {
        unsigned v;
        if (std::scanf("%u", &v) != 1) return 1;
        op1[i] = static_cast<unsigned short>(v);
    }
    Args args = {{op0, op1}, {{0, 0, 1}, {0, %N%, 1}}};
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) std::printf("%.9g\n", apply(acc[m * N + n], args, 0, m, n));
    return 0;
}
"""


def _run_harness(epilogue: plugin.Epilogue, acc, op0, op1, tmp_path) -> torch.Tensor:
    m, n = acc.shape
    steps = "\n".join("    " + line for line in render_epilogue(epilogue))
    src = HARNESS.replace("%STEPS%", steps).replace("%M%", str(m)).replace("%N%", str(n))
    (tmp_path / "h.cpp").write_text(src)
    exe = tmp_path / "h"
    subprocess.run([CXX, "-O1", "-o", str(exe), str(tmp_path / "h.cpp")], check=True)
    bits = op1.view(torch.int16).to(torch.int32) & 0xFFFF
    stdin = " ".join(
        [f"{v:.9g}" for v in acc.flatten().tolist()]
        + [f"{v:.9g}" for v in op0.tolist()]
        + [str(v) for v in bits.flatten().tolist()]
    )
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True)
    return torch.tensor([float(v) for v in out.stdout.split()]).reshape(m, n)


@pytest.mark.skipif(CXX is None, reason="needs a host C++ compiler (g++ or clang++)")
def test_rendered_steps_match_reference(tmp_path):
    gen = torch.Generator().manual_seed(0)
    m, n = 5, 7
    acc = torch.randn(m, n, generator=gen) * 3
    acc[0, 0] = float("nan")  # relu and friends must keep NaN like torch
    op0 = torch.randn(n, generator=gen)
    op1 = torch.randn(m, n, generator=gen).to(torch.bfloat16)
    operands = (spec((n,), "float32"), spec((m, n), "bfloat16"))
    steps = [plugin.EpilogueStep("add_bias_n", operand=0)]
    for kind in UNARY_KINDS:
        steps += [plugin.EpilogueStep(kind), plugin.EpilogueStep("add_matrix", operand=1)]
        steps += [plugin.EpilogueStep("mul_scalar", value=1.7)]
    # Several chains so that a wrong step cannot hide behind a saturating one.
    for chain in (steps[:4], steps[4:10], steps[10:]):
        epi = plugin.Epilogue(steps=tuple(chain), operands=operands)
        got = _run_harness(epi, acc, op0, op1, tmp_path)
        want = epi.apply_reference(acc, [op0, op1])
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5, equal_nan=True)


def test_unrenderable_epilogues_are_refused():
    inf = plugin.Epilogue(steps=(plugin.EpilogueStep("mul_scalar", value=float("inf")),))
    assert not check_epilogue(inf)
    dangling = plugin.Epilogue(steps=(plugin.EpilogueStep("add_matrix", operand=0),))
    assert "no valid operand" in check_epilogue(dangling).reason
    unknown = plugin.Epilogue(steps=(plugin.EpilogueStep("softplus"),))
    assert "softplus" in check_epilogue(unknown).reason
    with pytest.raises(ValueError, match="softplus"):
        render_epilogue(unknown)
