"""Convolutions: eager (cuDNN, oneDNN) calls inside the compiled graph, channels-last where
the graph's ``GraphLayout`` chose it for the node (``frontend.layout_choice``).

A channels-last convolution gets its input and weight in channels-last strides (a
pointwise copy where they are not: the graph's first input, and each weight on every
call, as cuDNN would otherwise copy them itself) and writes a channels-last buffer, which
the batch norm, activation and residual add after it inherit. Its bias is not passed to
the eager call (cuDNN adds it in a separate ATen kernel): the result is a lazy
``conv + bias`` that fuses into the kernel reading it, rounded as cuDNN's separate add
rounds it. (oneDNN on the CPU adds the bias inside the convolution and rounds once: there,
a half-precision result may differ from eager's by an ulp.) A channels-last
``convolution_backward`` (in a backward graph) likewise reads the output's gradient, the
input and the weight channels-last and writes the input's gradient channels-last; the
weight's gradient keeps eager's layout (the parameter's).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ...ir.nodes import Layout
from ...ir.ops import ops
from ..layout_choice import channels_last_strides
from ..lowering import register
from ..values import BufferValue, LazyValue, lazy
from .common import compute_dtype, loader, out_meta

aten = torch.ops.aten

_NCHW = "convolutions run as eager (cuDNN/oneDNN) calls"
_NHWC = "convolutions run as eager (cuDNN/oneDNN) calls, channels-last"


def _channels_last_or_eager(lower: Callable[..., Any]) -> Callable[..., Any]:
    """Guards a convolution lowering ``lower(ctx, node, *args)``: a node with keyword
    arguments, or one the graph's layout did not choose channels-last for, becomes a
    plain eager call (as an extern with eager's layouts); every other node is noted as a
    channels-last extern and lowered by ``lower``."""

    @functools.wraps(lower)
    def guarded(ctx, node, *args, **kwargs):
        if kwargs or not ctx.layout.conv_channels_last(node):
            return ctx.extern(node, args, kwargs, _NCHW)
        ctx.note_extern(node, _NHWC)
        return lower(ctx, node, *args)

    return guarded


@register(aten.convolution.default)
@_channels_last_or_eager
def _convolution(ctx, node, x, weight, bias, *rest):
    meta = out_meta(node)
    x_buf = ctx.channels_last_buffer(x)
    w_buf = ctx.channels_last_buffer(weight)
    size = tuple(int(s) for s in meta.shape)
    layout = Layout.contiguous(meta.device, meta.dtype, size)
    out_layout = Layout(
        layout.device, layout.dtype, layout.size, channels_last_strides(layout.size)
    )
    out = ctx.extern_call(
        node.target, (x_buf, w_buf, None, *rest), {}, meta, _NHWC, layout=out_layout
    )
    if tuple(meta.stride()) == tuple(int(s) for s in layout.stride):
        ctx.relaid[out.buffer.name] = layout
    if bias is None:
        return out
    return _plus_channel_bias(out, bias)


def _plus_channel_bias(out: BufferValue, bias: Any) -> LazyValue:
    """``out + bias`` with ``bias`` (1-D) along the channel dim 1: eager's bias add
    (computed in float32 for half types, rounded to ``out``'s dtype)."""
    math = compute_dtype(out.dtype)
    load_out = loader(out, out.size, math)
    load_bias = loader(bias, [out.size[1]], math)

    def fn(index: Any) -> Any:
        return ops.to_dtype(ops.add(load_out(index), load_bias([index[1]])), out.dtype)

    return lazy(out, fn)


@register(aten.convolution_backward.default)
@_channels_last_or_eager
def _convolution_backward(ctx, node, grad, x, weight, *rest):
    metas = node.meta.get("val")
    bufs = [ctx.channels_last_buffer(v) for v in (grad, x, weight)]
    layouts = [None] * len(metas)
    grad_input = metas[0]
    if isinstance(grad_input, torch.Tensor):
        plain = Layout.contiguous(grad_input.device, grad_input.dtype, tuple(grad_input.shape))
        layouts[0] = Layout(
            plain.device, plain.dtype, plain.size, channels_last_strides(plain.size)
        )
    outs = ctx.extern_call(node.target, (*bufs, *rest), {}, metas, _NHWC, layout=layouts)
    if layouts[0] is not None and tuple(grad_input.stride()) == tuple(int(s) for s in plain.stride):
        ctx.relaid[outs[0].buffer.name] = plain
    return outs
