"""The cuBLASLt fused bias (+ relu) choice: offered exactly when it computes the problem."""

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


@pytest.mark.parametrize("relu", [False, True])
def test_offered_for_bias_then_optional_relu(relu):
    inputs, layout, epilogue = _mm([BIAS, EpilogueStep("relu")] if relu else [BIAS])
    choice = vendor_epilogue_choice("mm", inputs, layout, epilogue)
    assert isinstance(choice, VendorEpilogueChoice) and choice.relu is relu


@pytest.mark.parametrize(
    "kwargs, steps",
    [
        ({}, [BIAS, EpilogueStep("gelu_erf")]),
        ({}, [BIAS, EpilogueStep("gelu_tanh")]),
        ({}, []),
        ({}, [EpilogueStep("relu")]),
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
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("contiguous_out", [True, False])
def test_matches_the_reference(op, relu, contiguous_out):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(17, 40, generator=gen), torch.randn(40, 24, generator=gen)
    bias = torch.randn(24, generator=gen)
    choice = VendorEpilogueChoice(op, relu)
    tail = (EpilogueStep("relu"),) if relu else ()
    if op == "mm":
        epilogue = plugin.Epilogue((BIAS, *tail))
        inputs = (a, b, bias)
    else:
        epilogue = plugin.Epilogue(tail)
        inputs = (bias, a, b)
    out = torch.empty(17, 24) if contiguous_out else torch.empty(24, 17).t()
    expected = torch.empty(17, 24)
    choice.run(*inputs, out=out)
    ExternChoice(op, epilogue).run(*inputs, out=expected)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_addmm_is_offered_only_with_relu():
    inputs = (_spec((32,)), _spec((16, 8)), _spec((8, 32)))
    layout = _spec((16, 32))
    relu = Epilogue((EpilogueStep("relu"),))
    assert vendor_epilogue_choice("addmm", inputs, layout, relu).relu is True
    assert vendor_epilogue_choice("addmm", inputs, layout, Epilogue()) is None


def test_the_default_pick_trusts_it_first():
    """Default mode takes cuBLASLt's bias epilogue unmeasured, as it takes extern: it is
    first party (an untrusted vendor candidate left the pick to a template heuristic)."""
    from tilefuse_autotune.selection import extern_candidate, heuristic_pick, vendor_candidate

    inputs, layout, epilogue = _mm([BIAS])
    (op_a, op_b), bias = inputs, epilogue.operands[0]
    vendor = vendor_candidate("mm", (op_a, op_b, bias), layout, epilogue)
    assert vendor is not None and vendor.first_party
    extern = extern_candidate("mm", epilogue)
    assert heuristic_pick([vendor], extern, epilogue) is vendor
