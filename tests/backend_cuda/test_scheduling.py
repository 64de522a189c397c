"""The CUDA backend answers epilogue questions from its CUTLASS templates (its choice
provider's ``accepts``); its scheduling fuses no pointwise kernels."""

from __future__ import annotations

from tilefuse import plugin
from tilefuse_cuda.descriptor import BACKEND
from tilefuse_cuda.provider import PROVIDER


def request(dtype: str, steps, operands=()):
    spec = plugin.TensorSpec((256, 256), (256, 1), dtype, "cuda:0")
    epilogue = plugin.Epilogue(tuple(steps), tuple(operands), dtype)
    return "mm", (spec, spec, *operands), spec, epilogue


def scheduling():
    factory = BACKEND.load()
    return factory(plugin.CompileContext(device="cuda:0", policy=None))


def test_load_returns_a_kernel_scheduling():
    assert isinstance(scheduling(), plugin.KernelScheduling)


def test_expressible_epilogue_is_accepted():
    bias = plugin.TensorSpec((256,), (1,), "bfloat16", "cuda:0")
    steps = [plugin.EpilogueStep("add_bias_n", operand=0), plugin.EpilogueStep("relu")]
    assert PROVIDER.accepts(*request("bfloat16", steps, [bias])).ok


def test_unserved_gemm_and_epilogue_are_refused_with_reasons():
    verdict = PROVIDER.accepts(*request("float32", []))
    assert not verdict.ok and "CUTLASS does not serve this GEMM" in verdict.reason
    steps = [plugin.EpilogueStep("softplus")]
    verdict = PROVIDER.accepts(*request("bfloat16", steps))
    assert not verdict.ok and "CUTLASS cannot render this epilogue" in verdict.reason


def test_pointwise_fusion_is_refused_with_a_reason():
    query = plugin.FusionQuery(("buf1",), plugin.GroupKind.POINTWISE, 8, 1, "cuda:0")
    verdict = scheduling().can_fuse_vertical(query, query)
    assert not verdict.ok and "no pointwise kernels" in verdict.reason
