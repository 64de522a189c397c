"""The CUDA backend's scheduling answers epilogue questions from its CUTLASS templates."""

from __future__ import annotations

from tilefuse import plugin
from tilefuse_cuda.descriptor import BACKEND


class FakeStep:
    def __init__(self, dtype: str, steps, operands=()):
        self._dtype = dtype
        self._steps = steps
        self._operands = operands

    def request(self):
        spec = plugin.TensorSpec((256, 256), (256, 1), self._dtype, "cuda:0")
        epilogue = plugin.Epilogue(tuple(self._steps), tuple(self._operands), self._dtype)
        return "mm", (spec, spec, *self._operands), spec, epilogue


def scheduling():
    factory = BACKEND.load()
    return factory(plugin.CompileContext(device="cuda:0", policy=None))


def test_load_returns_a_kernel_scheduling():
    assert isinstance(scheduling(), plugin.KernelScheduling)


def test_expressible_epilogue_is_accepted():
    bias = plugin.TensorSpec((256,), (1,), "bfloat16", "cuda:0")
    steps = [plugin.EpilogueStep("add_bias_n", operand=0), plugin.EpilogueStep("relu")]
    assert scheduling().can_fuse_vertical(FakeStep("bfloat16", steps, [bias]), None).ok


def test_unserved_gemm_and_pointwise_fusion_are_refused_with_reasons():
    verdict = scheduling().can_fuse_vertical(FakeStep("float32", []), None)
    assert not verdict.ok and "CUTLASS does not serve this GEMM" in verdict.reason
    verdict = scheduling().can_fuse_vertical(object(), None)
    assert not verdict.ok and "only into its GEMM templates" in verdict.reason
