"""The cuBLASLt fused bias + relu choice: offered exactly when it computes the problem."""

from __future__ import annotations

import pytest
import torch

from tilefuse import plugin
from tilefuse.plugin import Epilogue, EpilogueStep, TensorSpec
from tilefuse_autotune.extern import ExternChoice, VendorEpilogueChoice, vendor_epilogue_choice


def _spec(shape, dtype="bfloat16", device="cuda:0"):
    stride = (shape[1], 1) if len(shape) == 2 else (1,)
    return TensorSpec(tuple(shape), stride, dtype, device)


def _mm(steps, bias_shape=(32,), bias_dtype="bfloat16", device="cuda:0", out_dtype=None):
    inputs = (_spec((16, 8), device=device), _spec((8, 32), device=device))
    bias = _spec(bias_shape, bias_dtype, device)
    epilogue = Epilogue(tuple(steps), (bias,), out_dtype)
    return inputs, _spec((16, 32), device=device), epilogue


BIAS = EpilogueStep("add_bias_n", operand=0)


def test_offered_for_bias_then_relu():
    inputs, layout, epilogue = _mm([BIAS, EpilogueStep("relu")])
    assert isinstance(vendor_epilogue_choice("mm", inputs, layout, epilogue), VendorEpilogueChoice)


@pytest.mark.parametrize(
    "kwargs, steps",
    [
        ({}, [BIAS, EpilogueStep("gelu_erf")]),
        ({}, [BIAS, EpilogueStep("gelu_tanh")]),
        ({}, [BIAS]),
        ({}, [EpilogueStep("relu"), BIAS]),
        ({}, [BIAS, EpilogueStep("relu"), EpilogueStep("tanh")]),
        ({"bias_dtype": "float32"}, [BIAS, EpilogueStep("relu")]),
        ({"out_dtype": "float32"}, [BIAS, EpilogueStep("relu")]),
        ({"device": "cpu"}, [BIAS, EpilogueStep("relu")]),
    ],
)
def test_not_offered_when_it_would_compute_something_else(kwargs, steps):
    inputs, layout, epilogue = _mm(steps, **kwargs)
    assert vendor_epilogue_choice("mm", inputs, layout, epilogue) is None


@pytest.mark.parametrize("op", ["mm", "addmm"])
def test_matches_the_reference(op):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(17, 40, generator=gen), torch.randn(40, 24, generator=gen)
    bias = torch.randn(24, generator=gen)
    choice = VendorEpilogueChoice(op)
    if op == "mm":
        epilogue = plugin.Epilogue((BIAS, EpilogueStep("relu")))
        inputs = (a, b, bias)
    else:
        epilogue = plugin.Epilogue((EpilogueStep("relu"),))
        inputs = (bias, a, b)
    out, expected = torch.empty(17, 24), torch.empty(17, 24)
    choice.run(*inputs, out=out)
    ExternChoice(op, epilogue).run(*inputs, out=expected)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
