"""Rewrites of Dynamo's graph before AOTAutograd (``frontend.dynamo_passes``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.compile_check import check
from tilefuse.frontend.dynamo_passes import dense_attention_masks


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
    return keep[:, None, :, None].expand(2, 1, 16, 16)  # the key dim steps by 0


def _by_keyword(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_mask_over_keys(keep))


def _by_position(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, _mask_over_keys(keep))


def _dense_mask(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])


def _args():
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in "qkv")
    return q, k, v, torch.rand(2, 16) > 0.2


def test_a_mask_strided_over_keys_is_made_contiguous_by_keyword_or_position():
    for fn in (_by_keyword, _by_position):
        args = _args()
        gm, inputs = _dynamo_graph(fn, *args)
        expected = gm(*inputs)[0]
        assert dense_attention_masks(gm) == 1
        assert "contiguous" in gm.code
        torch.testing.assert_close(gm(*inputs)[0], expected)


def test_a_mask_with_unit_stride_keys_is_left_alone():
    gm, _ = _dynamo_graph(_dense_mask, *_args())
    assert dense_attention_masks(gm) == 0
    assert "contiguous" not in gm.code


def test_the_compiled_result_is_eagers():
    check(_by_keyword, *_args())
