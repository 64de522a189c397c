"""The channels-last decision (``frontend.layout_choice``) and its setting, without compiling."""

from __future__ import annotations

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from tilefuse import compile_options, config, plugin
from tilefuse.errors import TilefuseError
from tilefuse.frontend.layout_choice import (
    GraphLayout,
    channels_last_compatible,
    channels_last_strides,
    conv_wants_channels_last,
    is_channels_last,
    is_training_graph,
)

SIZES = [(2, 3, 5, 7), (1, 1, 4, 4), (3, 8, 1, 1), (1, 5, 1, 9)]


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_strides_are_torchs(size):
    want = torch.empty(size, memory_format=torch.channels_last).stride()
    got = channels_last_strides([sympy.Integer(s) for s in size])
    assert tuple(int(s) for s in got) == want


def test_ambiguous_layouts_are_compatible_but_no_reason_to_choose():
    size = (3, 8, 1, 1)  # H == W == 1: contiguous and channels-last alike
    contiguous = torch.empty(size).stride()
    assert channels_last_compatible(size, contiguous)
    assert not is_channels_last(size, contiguous)
    nhwc = torch.empty(2, 3, 5, 7, memory_format=torch.channels_last)
    assert is_channels_last(nhwc.shape, nhwc.stride())
    assert not channels_last_compatible((2, 3, 5, 7), torch.empty(2, 3, 5, 7).stride())


def _x(dtype, dims=4):
    return torch.empty((2, 3, 8, 8)[:dims], dtype=dtype, device="meta")


@pytest.mark.parametrize(
    ("dtype", "prefers", "tf32", "want"),
    [
        (torch.bfloat16, True, False, True),
        (torch.float16, True, False, True),
        (torch.float32, True, True, True),  # TF32 tensor-core kernels are NHWC
        (torch.float32, True, False, False),  # cuDNN's fp32 kernels are NCHW-native
        (torch.bfloat16, False, True, False),  # the device does not prefer it
        (torch.float64, True, True, False),
    ],
)
def test_auto_follows_device_and_dtype(dtype, prefers, tf32, want):
    got = conv_wants_channels_last(
        _x(dtype), False, device_prefers=prefers, setting="auto", tf32=tf32
    )
    assert got is want


@pytest.mark.parametrize(
    ("dtype", "want"),
    [(torch.bfloat16, True), (torch.float16, True), (torch.float32, False)],
)
def test_auto_in_training_takes_half_precision_only(dtype, want):
    got = conv_wants_channels_last(
        _x(dtype), False, device_prefers=True, setting="auto", tf32=True, training=True
    )
    assert got is want
    forced = conv_wants_channels_last(
        _x(dtype), False, device_prefers=False, setting="on", tf32=False, training=True
    )
    assert forced


def test_on_off_and_shapes():
    kw = dict(device_prefers=False, tf32=False)
    assert conv_wants_channels_last(_x(torch.float32), False, setting="on", **kw)
    assert not conv_wants_channels_last(_x(torch.bfloat16), False, setting="off",
                                        device_prefers=True, tf32=True)  # fmt: skip
    assert not conv_wants_channels_last(_x(torch.float32, 3), False, setting="on", **kw)
    assert not conv_wants_channels_last(_x(torch.float32), True, setting="on", **kw)


def _conv_graph(dtype):
    x = torch.randn(1, 3, 6, 6, dtype=dtype)
    w = torch.randn(4, 3, 3, 3, dtype=dtype)
    return make_fx(lambda x, w: F.conv2d(x, w).relu(), tracing_mode="fake")(x, w)


def test_graph_decision_asks_the_device_only_in_auto():
    gm = _conv_graph(torch.bfloat16)
    asked = []

    def prefers(device_type):
        asked.append(device_type)
        return True

    layout = GraphLayout.decide(gm, "auto", prefers)
    assert layout.channels_last and asked == ["cpu"]
    conv = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.convolution.default)
    assert layout.conv_channels_last(conv)
    assert not GraphLayout.decide(gm, "auto", lambda d: False).channels_last
    assert not GraphLayout.decide(gm, "off", prefers).channels_last
    assert GraphLayout.decide(gm, "on", lambda d: False).channels_last
    assert GraphLayout.decide(gm, "auto", prefers, training=True).channels_last
    fp32 = _conv_graph(torch.float32)
    assert GraphLayout.decide(fp32, "auto", prefers).channels_last is bool(
        torch.backends.cudnn.allow_tf32
    )
    assert not GraphLayout.decide(fp32, "auto", prefers, training=True).channels_last


def test_setting_from_env_and_options(monkeypatch):
    monkeypatch.delenv("TILEFUSE_CHANNELS_LAST", raising=False)
    assert config.channels_last() == "auto"
    for raw, want in [("1", "on"), ("off", "off"), ("AUTO", "auto"), ("yes", "on")]:
        monkeypatch.setenv("TILEFUSE_CHANNELS_LAST", raw)
        assert config.channels_last() == want
    monkeypatch.setenv("TILEFUSE_CHANNELS_LAST", "nhwc")
    with pytest.raises(TilefuseError, match="TILEFUSE_CHANNELS_LAST"):
        config.channels_last()
    with config.overrides(compile_options.parse(None, {"channels_last": False})):
        assert config.channels_last() == "off"
    with pytest.raises(TilefuseError, match="channels_last"):
        compile_options.parse(None, {"channels_last": "nhwc"})


def test_triton_claims_nhwc_only_where_it_serves_cuda_alone(monkeypatch):
    tilefuse_triton = pytest.importorskip("tilefuse_triton.descriptor")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert plugin.CAP_CHANNELS_LAST in tilefuse_triton.BACKEND.info.capabilities
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert plugin.CAP_CHANNELS_LAST not in tilefuse_triton.BACKEND.info.capabilities


def test_training_graphs_are_recognised_for_auto_to_keep_eagers_layout():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    forward = make_fx(lambda x, w: F.conv2d(x, w).relu())(x, w)
    assert not is_training_graph(forward, frozenset())
    assert is_training_graph(forward, frozenset({1}))  # it saves an activation for backward
    grad = torch.randn(2, 4, 6, 6)
    backward = make_fx(
        lambda g, x, w: torch.ops.aten.convolution_backward(
            g, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False]
        )
    )(grad, x, w)
    assert is_training_graph(backward, frozenset())
