"""Rewrites of Dynamo's graph before AOTAutograd (``frontend.dynamo_passes``). The mask
rewrite applies to CUDA masks; here it is let loose on CPU ones (``DEVICE_TYPES``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check
from tilefuse.frontend import dynamo_passes
from tilefuse.frontend.dynamo_passes import dense_attention_masks


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(dynamo_passes, "DEVICE_TYPES", ("cpu",))


def _dynamo_graph(fn, *args) -> tuple[torch.fx.GraphModule, list]:
    """Dynamo's graph of ``fn`` and its inputs (in the graph's order)."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=keep)(*args)
    return graphs[0]


def _mask_over_keys(keep):
    return keep[:, None, :, None].expand(2, 1, 16, 16)  # row i: keep[b, i]; keys step by 0


def _by_keyword(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_mask_over_keys(keep))


def _by_position(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, _mask_over_keys(keep))


def _additive(q, k, v, keep):
    bias = torch.where(keep, 0.0, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_mask_over_keys(bias))


def _with_dropout(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, _mask_over_keys(keep), 0.1)


def _dense_mask(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])


def _args(keep_all=True):
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in "qkv")
    keep = torch.ones(2, 16, dtype=torch.bool)
    if not keep_all:
        keep[0, 5] = keep[1, 0] = False  # two query rows with every key masked
    return q, k, v, keep


@pytest.mark.parametrize("fn", [_by_keyword, _by_position, _additive])
def test_a_mask_strided_over_keys_is_made_contiguous(on_cpu, fn):
    args = _args()
    gm, inputs = _dynamo_graph(fn, *args)
    expected = gm(*inputs)[0]
    assert dense_attention_masks(gm) == 1
    assert "contiguous" in gm.code
    torch.testing.assert_close(gm(*inputs)[0], expected)


def _two_layers(q, k, v, keep):
    mask = _mask_over_keys(keep)
    h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(h, k, v, attn_mask=mask)


def test_a_mask_shared_by_two_calls_is_copied_once(on_cpu):
    args = _args(keep_all=False)
    gm, inputs = _dynamo_graph(_two_layers, *args)
    assert dense_attention_masks(gm) == 2
    assert gm.code.count(".contiguous()") == 1 and gm.code.count(".any(") == 1
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        torch.testing.assert_close(gm(*inputs)[0], _two_layers(*args))


@pytest.mark.parametrize("fn", [_by_keyword, _additive])
def test_rows_with_every_key_masked_are_zero_as_on_the_math_path(on_cpu, fn):
    args = _args(keep_all=False)
    gm, inputs = _dynamo_graph(fn, *args)
    assert dense_attention_masks(gm) == 1
    out = gm(*inputs)[0]
    assert out[0, :, 5].eq(0).all() and out[1, :, 0].eq(0).all()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        torch.testing.assert_close(out, fn(*args))


@pytest.mark.parametrize("fn", [_with_dropout, _dense_mask])
def test_a_dropout_or_a_unit_stride_mask_is_left_alone(on_cpu, fn):
    gm, _ = _dynamo_graph(fn, *_args())
    assert dense_attention_masks(gm) == 0
    assert "contiguous" not in gm.code


def test_a_mask_in_a_graph_that_trains_is_left_alone(on_cpu):
    q, k, v, keep = _args()
    gm, _ = _dynamo_graph(_by_keyword, q.requires_grad_(), k, v, keep)
    assert dense_attention_masks(gm) == 0


def test_a_cpu_mask_is_left_alone():
    gm, _ = _dynamo_graph(_by_keyword, *_args())
    assert dense_attention_masks(gm) == 0


def test_the_compiled_result_is_eagers(on_cpu):
    check(_by_keyword, *_args())
