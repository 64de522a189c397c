"""One name, one meaning: the shared error, setting and tables that core and plugins reuse."""

from __future__ import annotations

import pytest
import torch

from tilefuse import config, plugin
from tilefuse.errors import TilefuseError, Unsupported


def test_unsupported_is_a_tilefuse_error():
    assert issubclass(Unsupported, TilefuseError)


@pytest.mark.parametrize(
    "module", ["tilefuse.frontend.lowering", "tilefuse_triton.gemm", "tilefuse_cuda.problem"]
)
def test_every_unsupported_is_the_one_in_errors(module):
    assert pytest.importorskip(module).Unsupported is Unsupported


INTERPRET_VALUES = ["1", "0", "", "true", "TRUE", "on", "yes", "y", "2", "off", "false", " 1"]


@pytest.mark.parametrize("value", INTERPRET_VALUES)
def test_triton_interpreted_agrees_with_triton(monkeypatch, value):
    knobs = pytest.importorskip("triton.knobs")
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert config.triton_interpreted() is bool(knobs.runtime.interpret)


def test_triton_interpreted_unset_is_off(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not config.triton_interpreted()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert config.triton_interpreted()


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.uint8]
)
def test_dtype_names_round_trip(dtype):
    name = plugin.dtype_name(dtype)
    assert "." not in name and plugin.dtype_from_name(name) is dtype
    assert plugin.TensorSpec.of(torch.empty(2, dtype=dtype)).dtype == name


@pytest.mark.parametrize("name", ["bogus", "Tensor", "torch.float32", ""])
def test_dtype_from_name_refuses_what_is_not_a_dtype(name):
    with pytest.raises(ValueError, match="not a torch dtype name"):
        plugin.dtype_from_name(name)


@pytest.mark.parametrize("op", sorted(plugin.GEMM_OPS))
def test_gemm_ops_count_the_inputs_torch_takes(op):
    """Each op's count is what ``torch.<op>`` takes, in ``Choice``'s order (bias first)."""
    shapes = {
        "mm": [(2, 3), (3, 4)],
        "addmm": [(4,), (2, 3), (3, 4)],
        "bmm": [(5, 2, 3), (5, 3, 4)],
    }
    inputs = [torch.randn(s) for s in shapes[op]]
    assert len(inputs) == plugin.GEMM_OPS[op]
    getattr(torch, op)(*inputs)  # raises if the count or order is wrong
