"""Every template family renders consistent text: ops x layouts x dtypes x epilogues x
variants (no toolkit needed)."""

from __future__ import annotations

import re

import pytest

from tests.backend_rocm.cases import DTYPES, LAYOUTS, epilogues, problem
from tilefuse_rocm.gemm_spec import MFMA_CONFIGS, SIMT_CONFIGS, GemmConfig
from tilefuse_rocm.render import kernel_name, render_gemm

VARIANTS = {"simt": SIMT_CONFIGS[1], "mfma": MFMA_CONFIGS[1]}
BUILTINS = {
    "bfloat16": "__builtin_amdgcn_mfma_f32_32x32x8bf16_1k",
    "float16": "__builtin_amdgcn_mfma_f32_32x32x8f16",
    "float32": "__builtin_amdgcn_mfma_f32_32x32x2f32",
}
LOADS = {"float32": "(A[", "float16": "tf_half_to_float(A[", "bfloat16": "tf_bf16_to_float(A["}


def _check_text(text: str, prob, config: GemmConfig) -> None:
    for marker in ("{{", "}}", "{%", "%}", "{#", "#}"):
        assert marker not in text, f"leftover jinja marker {marker!r}"
    assert text.count("{") == text.count("}"), "unbalanced braces"
    name = kernel_name(prob, config)
    assert f"void __launch_bounds__(THREADS) {name}(TfGemmArgs args)" in text
    assert f"hipLaunchKernelGGL({name}," in text
    assert f"constexpr int BLOCK_M = {config.block_m};" in text
    assert f"constexpr int BLOCK_N = {config.block_n};" in text
    assert f"constexpr int BLOCK_K = {config.block_k};" in text
    assert f"constexpr int THREADS = {config.threads};" in text
    assert 'extern "C" int tilefuse_rocm_launch(' in text
    # One store site per variant, so each step appears exactly once, in order.
    positions = []
    for i, step in enumerate(prob.epilogue.steps):
        tag = f"/* epilogue step {i}: {step.kind} */"
        assert text.count(tag) == 1, tag
        positions.append(text.index(tag))
    assert positions == sorted(positions)
    assert ("/* addmm bias */" in text) == (prob.op == "addmm")
    for i in range(len(prob.epilogue.operands)):
        assert f"args.s_ops[{i}][1]" in text
    if config.mfma:
        assert BUILTINS[prob.a_dtype] in text
        assert "fmaf(" not in text
    else:
        assert "__builtin_amdgcn_mfma" not in text
        assert LOADS[prob.a_dtype] in text
    row_a = "kk = e % BLOCK_K;  // k is contiguous in memory: neighbouring" in text
    assert row_a == (prob.a_layout == "row")
    assert ("nn = e % BLOCK_N;" in text) == (prob.b_layout == "row")
    store = {
        "float32": "= (x);",
        "float16": "tf_float_to_half(x);",
        "bfloat16": "tf_float_to_bf16(x);",
    }
    assert store[prob.out_dtype] in text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["mm", "addmm", "bmm"])
def test_every_family_renders_consistently(op, dtype, variant):
    config = VARIANTS[variant]
    names = set()
    for layouts in LAYOUTS:
        for epilogue in epilogues(op, dtype):
            prob = problem(op, dtype, layouts, epilogue)
            text = render_gemm(prob, config)
            _check_text(text, prob, config)
            names.add(kernel_name(prob, config))
    assert len(names) == len(LAYOUTS) * len(epilogues(op, dtype)), "kernel names collide"


def test_render_is_deterministic_and_config_dependent():
    prob = problem("mm", "bfloat16", ("row", "row"), epilogues("mm", "bfloat16")[-1])
    assert render_gemm(prob, SIMT_CONFIGS[0]) == render_gemm(prob, SIMT_CONFIGS[0])
    assert render_gemm(prob, SIMT_CONFIGS[0]) != render_gemm(prob, SIMT_CONFIGS[1])


def test_mul_scalar_is_an_exact_hex_literal():
    prob = problem("mm", "float32", ("row", "row"), epilogues("mm", "float32")[7])
    text = render_gemm(prob, SIMT_CONFIGS[0])
    assert re.search(r"static_cast<float>\(0x1\.0+p-3\)", text)


def test_bad_config_is_refused_with_reason():
    bad = GemmConfig(64, 64, 16, thread_m=3, thread_n=4)
    prob = problem("mm", "float32", ("row", "row"), epilogues("mm", "float32")[0])
    verdict = bad.check(prob)
    assert not verdict and "thread tile" in verdict.reason
    with pytest.raises(ValueError, match="thread tile"):
        render_gemm(prob, bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_offered_configs_fit_lds(dtype):
    prob = problem("mm", dtype, ("row", "row"), epilogues("mm", dtype)[0])
    configs = SIMT_CONFIGS + MFMA_CONFIGS
    ok = [c for c in configs if c.check(prob)]
    for config in configs:
        assert (config.lds_bytes(prob) <= 64 * 1024) == (config in ok)
    assert all(c in ok for c in SIMT_CONFIGS)
    assert any(c.mfma for c in ok)


def test_lds_bytes_matches_the_compiler_for_one_kernel():
    # simt 64x64x16 fp32 staging, pad 1: 2 * 16 * (65 + 65) * 4 bytes; hipcc reported the
    # same LDSByteSize (16640) for this tiling.
    assert SIMT_CONFIGS[1].lds_bytes() == 16640
