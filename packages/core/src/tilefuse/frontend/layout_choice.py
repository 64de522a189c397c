"""Channels-last layout around convolutions: the decision and the stride arithmetic.

A 4-D convolution whose device prefers NHWC (cuDNN's tensor-core kernels: an NCHW
call pays an ``nchwToNhwc`` transpose of its input and weight and an ``nhwcToNchw`` of
its output) is computed channels-last: its input and weight reach the extern in
channels-last strides and its output buffer is channels-last. Buffers realized from a
body that reads a channels-last buffer element for element (batch norm, ReLU, the
residual add, pooling) inherit the layout (``GraphLowering.realize``), so no transpose
runs between layers. Graph outputs keep eager's strides (``GraphLowering._output``).

The decision is made here once per graph (``GraphLayout.decide``), at lowering time:
layouts are fixed when a buffer is realized, because the loads of every body that reads
it are indexed through that layout. Core asks the backends whether a device prefers it
(``plugin.CAP_CHANNELS_LAST``); it never tests device names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.fx

from ..ir.index import Expr

aten = torch.ops.aten
HALF_TYPES = (torch.float16, torch.bfloat16)
# Convolution ops -> (position of the input, position of ``transposed``) in their args.
CONVOLUTIONS = {aten.convolution.default: (0, 6), aten.convolution_backward.default: (1, 7)}


def channels_last_strides(size: Sequence[Expr]) -> tuple[Expr, ...]:
    """The strides ``torch.empty(size, memory_format=torch.channels_last)`` has (4-D)."""
    n, c, h, w = size
    return (h * w * c, sympy.Integer(1), w * c, c)


def channels_last_compatible(size: Sequence[Expr], stride: Sequence[Expr]) -> bool:
    """Whether ``stride`` addresses a 4-D tensor as channels-last strides do (the strides
    of size-1 dims never matter)."""
    if len(size) != 4:
        return False
    want = channels_last_strides(size)
    return all(s == 1 or st == w for s, st, w in zip(size, stride, want))


def is_channels_last(size: Sequence[Expr], stride: Sequence[Expr]) -> bool:
    """``channels_last_compatible`` and not also contiguous: a tensor that both layouts
    describe (``C == 1`` or ``H == W == 1``) is no reason to choose channels-last."""
    if not channels_last_compatible(size, stride):
        return False
    c, h, w = size[1], size[2], size[3]
    return bool(c != 1 and h * w != 1)


def conv_wants_channels_last(
    input_meta: torch.Tensor,
    transposed: bool,
    *,
    device_prefers: bool,
    setting: str,
    tf32: bool,
    training: bool = False,
) -> bool:
    """Whether one convolution should run channels-last.

    ``setting`` is ``config.channels_last()``: ``"off"`` never, ``"on"`` every 4-D
    convolution on any device (how CPU tests exercise the propagation), ``"auto"`` where
    ``device_prefers`` (a backend serving the device declares ``CAP_CHANNELS_LAST``) and
    the dtype is one the NHWC kernels are fast for: float16 and bfloat16 always; float32
    only where TF32 convolutions are allowed (``torch.backends.cudnn.allow_tf32``, on by
    default), whose tensor-core kernels are NHWC as well. With TF32 off, cuDNN's float32
    kernels are NCHW-native and channels-last would only add transposes. Transposed
    convolutions keep eager's layout (their NHWC support is patchier). In a ``training``
    graph ``auto`` takes float16 and bfloat16 only: the H200 check of a ResNet-18 float32
    training step (TF32 on) found conv1's weight gradient 13% from eager's, not yet
    explained, while a bf16 autocast step's cuDNN kernels are NHWC either way.
    """
    if setting == "off" or input_meta.dim() != 4 or transposed:
        return False
    if setting == "on":
        return True
    if not device_prefers:
        return False
    if input_meta.dtype in HALF_TYPES:
        return True
    return input_meta.dtype == torch.float32 and tf32 and not training


@dataclass(frozen=True)
class GraphLayout:
    """The layout decision for one graph: the convolution nodes (by FX name) computed
    channels-last. The graph propagates channels-last when there is any."""

    convolutions: frozenset[str] = frozenset()

    @property
    def channels_last(self) -> bool:
        return bool(self.convolutions)

    def conv_channels_last(self, node: torch.fx.Node) -> bool:
        return node.name in self.convolutions

    @classmethod
    def decide(
        cls,
        gm: torch.fx.GraphModule,
        setting: str,
        device_prefers: Callable[[str], bool],
        training: bool = False,
    ) -> GraphLayout:
        """Each convolution (forward or backward) of ``gm`` that wants channels-last
        (``conv_wants_channels_last``, asked about the convolution's input);
        ``device_prefers(device_type)`` answers for a device (asked only in ``"auto"``);
        ``training``: ``gm`` is part of a training step (``is_training_graph``)."""
        if setting == "off":
            return cls()
        tf32 = bool(torch.backends.cudnn.allow_tf32)
        chosen = set()
        for node in gm.graph.nodes:
            if node.op != "call_function" or node.target not in CONVOLUTIONS:
                continue
            at, transposed_at = CONVOLUTIONS[node.target]
            x = _meta(node.args[at]) if len(node.args) > at else None
            if x is None:
                continue
            prefers = setting == "on" or device_prefers(x.device.type)
            transposed = len(node.args) > transposed_at and bool(node.args[transposed_at])
            if conv_wants_channels_last(
                x,
                transposed,
                device_prefers=prefers,
                setting=setting,
                tf32=tf32,
                training=training,
            ):
                chosen.add(node.name)
        return cls(frozenset(chosen))


def is_training_graph(gm: torch.fx.GraphModule, saved_activations: frozenset[int]) -> bool:
    """Whether ``gm`` is part of a training step: a forward graph that saves activations
    for backward (``saved_activations``, see ``GraphLowering``) or a graph with a
    convolution's backward. ``auto`` lays such graphs out channels-last only for
    half-precision convolutions (``conv_wants_channels_last``)."""
    if saved_activations:
        return True
    backward = aten.convolution_backward.default
    return any(n.op == "call_function" and n.target is backward for n in gm.graph.nodes)


def _meta(arg: Any) -> torch.Tensor | None:
    val = getattr(arg, "meta", {}).get("val") if isinstance(arg, torch.fx.Node) else None
    return val if isinstance(val, torch.Tensor) else None
