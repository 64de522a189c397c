"""``F.scaled_dot_product_attention`` on CPU tensors: forward and gradients match eager.

Regression: core-aten's decomposition of the CPU flash-attention op returns attention
weights where the op returns a log-sum-exp, and the backward kernel read them as one.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, kernel_count


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_forward_and_backward(causal):
    q, k, v = (torch.randn(2, 3, 11, 8, requires_grad=True) for _ in range(3))
    check_grad(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), q, k, v)


def test_sdpa_on_split_heads_backward():
    x = torch.randn(2, 9, 24, requires_grad=True)

    def attend(x):
        q, k, v = (t.view(2, 9, 2, 4).transpose(1, 2) for t in x.split(8, -1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)

    check_grad(attend, x)


def test_sdpa_reads_heads_of_a_fused_projection_in_place():
    """q, k and v permuted out of one projection reach the attention extern as the
    strided views eager passes, and the output's transpose and reshape are a view of the
    attention's result: no kernel copies anything (the GEMM alone)."""

    def block(x, w):
        b, n, c = x.shape
        qkv = (x @ w).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)

    reports = check(block, torch.randn(2, 9, 16), torch.randn(16, 48))
    assert kernel_count(reports) == 1, [r.format() for r in reports]
