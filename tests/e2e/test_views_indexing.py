"""Views, copies, indexing and creation ops against eager: dtypes, odd and zero-size
shapes, non-contiguous inputs, negative indices, backward through gather/embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, kernel_count

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# Each view is followed by a pointwise op so that the graph has a kernel to generate.
VIEWS = {
    "view": lambda x: x.view(7, 13 * 257) * 2,
    "reshape-merge": lambda x: x.reshape(91, 257) + 1,
    "reshape-split": lambda x: x.reshape(7, 13, 1, 257).reshape(1, 7 * 13, 257).neg(),
    "flatten": lambda x: x.flatten(1) - 1,
    "permute": lambda x: x.permute(2, 0, 1) * 3,
    "transpose": lambda x: x.transpose(0, 2).sin(),
    "t-of-2d": lambda x: x[0].t().exp(),
    "expand": lambda x: x[:, :1, :].expand(7, 13, 257) * x,
    "unsqueeze-squeeze": lambda x: x.unsqueeze(1).unsqueeze(-1).squeeze(-1).squeeze(1) + 2,
    "slice-step": lambda x: x[1::2, ::3, 5:250:7] * 2,
    "slice-negative": lambda x: x[-3:, -5:-1, -17:] + 1,
    "narrow": lambda x: x.narrow(2, 100, 50).cos(),
    "select": lambda x: (x[3] * 2, x[:, -1] + 1, x.select(2, -5) * 3, x[-1, 4, 100] + 1),
    "flip": lambda x: x.flip(0, 2) * 2,
    "flip-last": lambda x: torch.flip(x, [-1]) - x,
    "diagonal": lambda x: x[:, :7, :7].diagonal(dim1=-2, dim2=-1) * 2,
    # a view at a storage offset, from an extern: kernels address it from its data pointer
    "diagonal-offset": lambda x: (x.diagonal(1, 0, 2) * 2, x.diagonal(-3, 1, 2) + 1),
    # a padded odd-step slice of a transposed reshape: (2*i - 1) // 2 is not i
    "pad-of-strided-reshape": lambda x: (
        F.pad(x[0, 0, :12].view(2, 6).t().reshape(12)[1::2], (1, 0)) * 2
    ),
    # the extern's result overlaps itself in eager (an expand's stride 0) but not in ours
    "diagonal-of-expand": lambda x: (x[:, :1] * 2).expand(7, 5, 257).diagonal(1, 0, 2) + 1,
    "unfold-like-as-strided": lambda x: x.contiguous().as_strided((7, 4, 5), (13 * 257, 3, 1)) + 1,
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views(name):
    x = torch.randn(7, 13, 257)
    check(VIEWS[name], x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_views_dtypes_and_non_contiguous(dtype):
    x = torch.randn(13, 7, 9).to(dtype).transpose(0, 1)  # non-contiguous input

    def fn(x):
        return (
            x.reshape(7, -1) * 2,
            x.permute(2, 1, 0).contiguous() + 1,
            x[::2, 1:-1].flip(-1) - x[::2, 1:-1],
            x.unsqueeze(0).expand(3, 7, 13, 9) * 0.5,
        )

    check(fn, x, dtype=dtype)


def test_flip_of_a_flattened_slice_reads_only_its_input():
    """prod's backward flips a slice of a flattened input; the kernel's index once went
    negative (C's ``%``) and read the storage before the input: NaN there makes it visible."""
    storage = torch.full((250,), float("nan"))
    storage[125:] = torch.randn(125)
    x = storage[125:].view(5, 5, 5)
    check(lambda x: torch.cat([torch.ones(1), x.reshape(-1)[1:].flip(0)]) * 2, x)


def test_view_outputs_without_compute():
    x = torch.randn(6, 10)
    check(lambda x: (x.t(), x.view(3, 20), x[:, 2:5], x.unsqueeze(0), x + 1), x)


def test_size_one_and_zero_size_views():
    a = torch.randn(1, 1, 5)
    z = torch.randn(0, 5)
    check(
        lambda a, z: (
            a.squeeze() * 2,
            a.expand(4, 3, 5) + 1,
            z.t() * 2,
            z.reshape(5, 0) + 1,
            z[:, 1:3] - 1,
        ),
        a,
        z,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_three_inputs(dim, dtype):
    a = torch.randn(5, 7, 3).to(dtype)
    b = torch.randn(5, 7, 3).to(dtype)
    c = torch.randn(5, 7, 3).to(dtype)
    if dim == 0:
        b = torch.randn(2, 7, 3).to(dtype)
    elif dim == 1:
        c = torch.randn(5, 1, 3).to(dtype)
    check(lambda a, b, c: torch.cat([a * 2, b.sin(), c], dim) + 1, a, b, c, dtype=dtype)


def test_cat_non_contiguous_and_empty_inputs():
    a = torch.randn(7, 5).t()  # 5x7, transposed
    b = torch.randn(0, 7)
    c = torch.randn(3, 14)[:, ::2]
    check(lambda a, b, c: torch.cat([a, b, c], 0) * 2, a, b, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bool, torch.uint8], ids=str)
def test_cat_of_inputs_all_empty_along_dim(dtype):
    # The OpInfo sweep's cat sample 4: no input has an element, so the output is empty.
    a, b = torch.zeros(0, dtype=dtype), torch.ones(0, dtype=dtype)
    c, d = torch.zeros(3, 0, dtype=dtype), torch.ones(3, 0, dtype=dtype)
    check(lambda a, b, c, d: (torch.cat([a, b], 0), torch.cat([c, d], 1)), a, b, c, d)


def test_cat_promotes_past_a_skipped_legacy_empty_input():
    # eager skips the 1-d (0,) tensor but still promotes to its float32
    e = torch.randn(0)
    m = torch.arange(6).reshape(2, 3)
    check(lambda e, m: torch.cat([e, m], 0), e, m)


def test_cat_of_head_views_with_a_transposed_piece_is_one_2d_kernel():
    # The q/k/v gradient of fused-QKV attention (GPT-2's c_attn): the k piece comes from
    # k.transpose(-1, -2)'s gradient, so it is contiguous along the sequence. Its index
    # must come out affine (no divisions of a shifted channel index) for the 2D tile.
    b, h, s, d = 2, 4, 16, 8

    def fn(q, k_t, v):
        pieces = [q.transpose(1, 2), k_t.permute(0, 3, 1, 2), v.transpose(1, 2)]
        return torch.cat([p.reshape(b, s, h * d) for p in pieces], 2) * 2

    q, k_t, v = torch.randn(b, h, s, d), torch.randn(b, h, d, s), torch.randn(b, h, s, d)
    reports = check(fn, q, k_t, v)
    assert kernel_count(reports) == 1
    assert reports[0].kernels[0].kind == "pointwise-2d"
    loads = [line for line in reports[0].kernels[0].source.splitlines() if "tl.load(" in line]
    assert len(loads) == 3 and not any(" - " in line for line in loads), loads


@pytest.mark.parametrize("lengths", [(5, 7, 3), (1, 6, 2), (4, 4)], ids=str)
@pytest.mark.parametrize("dim", [0, 1])
def test_cat_of_uneven_transposed_pieces_matches_eager(lengths, dim):
    # A piece's start that is no multiple of its length (5 of 7, 12 of 3) wraps its
    # masked lanes by a different count; each piece is a transposed view.
    pieces = [torch.randn(9, n) if dim == 0 else torch.randn(n, 9) for n in lengths]

    def fn(*xs):
        return torch.cat([x.t() * (i + 1) for i, x in enumerate(xs)], dim)

    check(fn, *pieces)


def test_split_of_fused_qkv_backward_matches_eager():
    # split's backward is the cat of the three gradients, one of them transposed
    b, s, h, d = 2, 8, 2, 4
    c = h * d

    def fn(qkv):
        q, k, v = qkv.split(c, dim=2)
        q, k, v = (t.view(b, s, h, d).transpose(1, 2) for t in (q, k, v))
        return torch.softmax(q @ k.transpose(-1, -2), -1) @ v

    check_grad(fn, torch.randn(b, s, 3 * c, requires_grad=True))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_stack(dim):
    a, b, c = torch.randn(3, 5, 4).unbind(0)
    check(lambda a, b, c: torch.stack([a, b.exp(), c * 2], dim) - 1, a, b, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_constant_pad_nd(dtype):
    x = torch.randn(3, 7, 13).to(dtype)
    check(
        lambda x: (
            F.pad(x, (1, 2)),
            F.pad(x, (0, 0, 3, 1), value=-1.5),
            F.pad(x, (2, 2, 1, 1, 1, 0)) * 2,
            F.pad(x, (-1, 2)),
        ),
        x,
        dtype=dtype,
    )


def test_split_chunk_unbind():
    x = torch.randn(7, 13)

    def fn(x):
        a, b, c = x.split([2, 4, 7], dim=1)
        d = x.chunk(3, dim=0)  # uneven: 3, 3, 1 rows
        u = x[:3].unbind(0)
        return a * 2, b.exp(), c - 1, d[0] + d[1], d[2] * 3, u[0] + u[2], x.split(5, 1)[2] * 2

    check(fn, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(dim, dtype):
    x = torch.randn(5, 7, 11).to(dtype)
    idx = torch.randint(0, x.shape[dim], (5, 7, 11))
    idx = idx.narrow(dim, 0, 3)
    check(lambda x, i: torch.gather(x, dim, i) * 2, x, idx, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float16], ids=str)
def test_gather_index_of_another_rank(dtype):
    # Eager accepts an empty index of any rank (the OpInfo sweep's gather sample 4: a
    # (2, 0) uint8 index into a (5,) tensor) and a 0-d index into a 1-d tensor.
    x = torch.arange(5).to(dtype)
    empty = torch.zeros(2, 0, dtype=torch.uint8)
    wide = torch.zeros(2, 0, 4, dtype=torch.int64)
    one = torch.tensor(3)
    check(
        lambda x, e, w, o: (torch.gather(x, 0, e), torch.gather(x, 0, w), torch.gather(x, 0, o)),
        x,
        empty,
        wide,
        one,
    )


def test_gather_backward():
    x = torch.randn(7, 13, requires_grad=True)
    idx = torch.randint(0, 13, (7, 4))  # repeated indices accumulate in the gradient
    check_grad(lambda x, i: torch.gather(x, 1, i).exp(), x, idx)


@pytest.mark.parametrize("index", [[[4, -1], [0, 4]], -2, 3], ids=["2d", "0d-negative", "0d"])
def test_take_with_any_index_rank(index):
    # A 0-d index once compiled no graph: torch's decomposition read it with .item()
    # (OpInfo take-*-2, take-*-4). Repeated indices accumulate in the gradient.
    x = torch.randn(2, 3, requires_grad=True)
    check_grad(lambda x, i: torch.take(x, i).exp(), x, torch.tensor(index))


@pytest.mark.parametrize("dim", [0, 1])
def test_index_select(dim):
    x = torch.randn(7, 13)
    idx = torch.tensor([0, 6, 2, 2, 5]) if dim == 0 else torch.tensor([12, 0, 3])
    check(lambda x, i: torch.index_select(x, dim, i) + 1, x, idx)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_embedding_forward(dtype):
    w = torch.randn(11, 16).to(dtype)
    ids = torch.tensor([[0, 3, 10, 3], [7, 7, 1, 2]])
    check(lambda ids, w: F.embedding(ids, w) * 2, ids, w, dtype=dtype)


def test_embedding_backward_on_weight():
    w = torch.randn(11, 16, requires_grad=True)
    ids = torch.tensor([[0, 3, 10, 3], [7, 7, 1, 2]])  # repeated ids accumulate
    check_grad(lambda ids, w: F.embedding(ids, w).tanh(), ids, w)


def test_embedding_padding_idx_backward():
    w = torch.randn(11, 16, requires_grad=True)
    ids = torch.tensor([[0, 3, 10, 3], [7, 0, 1, 2]])
    check_grad(lambda ids, w: F.embedding(ids, w, padding_idx=0) * 3, ids, w)


def test_advanced_indexing():
    x = torch.randn(7, 13, 5)
    idx = torch.tensor([6, 0, 2, 2, -1])  # repeated and negative
    cols = torch.tensor([[1, 12], [-3, 4]])

    def fn(x, idx, cols):
        return x[idx] * 2, x[:, cols] + 1, x[idx, 1:3], x[:, :, idx[:3] % 5] - 1

    check(fn, x, idx, cols)


def test_boolean_mask_indexing_graph_breaks_but_matches():
    # x[mask] has a data-dependent shape; Dynamo breaks the graph, results must still match
    x = torch.randn(7, 13)
    check(lambda x: (x * 2)[x > 0].sum() + 1, x)


def test_creation_ops():
    x = torch.randn(7, 13)

    def fn(x):
        return (
            torch.full((3, 5), 2.5) + 1,
            torch.arange(13) * 2,
            torch.arange(2, 29, 3, dtype=torch.float32) / 3,
            torch.zeros_like(x) + x,
            torch.ones_like(x, dtype=torch.float16) * 2,
            torch.full_like(x, -3.0) * x,
            x + torch.arange(13),
            torch.zeros(0, 3) + 1,
        )

    check(fn, x)


def test_where_with_arange_mask():
    x = torch.randn(7, 13)
    check(lambda x: torch.where(torch.arange(13) % 2 == 0, x, -x) + torch.arange(7)[:, None], x)


def test_x_plus_x_t_is_one_kernel():
    x = torch.randn(33, 33)
    reports = check(lambda x: x + x.t(), x)
    assert kernel_count(reports) == 1, [r.format() for r in reports]


def test_index_put_and_scatter_add():
    x = torch.randn(7, 13)
    idx = torch.tensor([0, 3, 3, 6])
    src = torch.randn(4, 13)

    def fn(x, idx, src):
        return x.index_add(0, idx, src), x.scatter_add(0, idx[:, None].expand(4, 13), src)

    check(fn, x, idx, src)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_index_per_line_scatter_is_a_fused_compare(dtype):
    x = torch.randn(7, 13, 5).to(dtype)
    rows = torch.tensor([[3], [12], [0], [12], [5], [7], [1]])[:, :, None].expand(7, 1, 5)
    cols = torch.randint(0, 5, (7, 13, 1))
    src = torch.randn(7, 1, 5).to(dtype)

    def fn(x, rows, cols, src):
        return (
            torch.zeros_like(x).scatter(1, rows, -1.5) * x,
            x.scatter(-1, cols, 2.0).exp(),
            (x * 2).scatter(1, rows, src),
        )

    reports = check(fn, x, rows, cols, src, dtype=dtype)
    assert not any(r.externs for r in reports), [r.format() for r in reports]


def test_other_scatters_stay_eager_and_match():
    x = torch.randn(7, 13)
    two_per_line = torch.tensor([[0, 3]] * 7)
    part = torch.tensor([[1], [2]])  # covers two of the seven rows
    reports = check(lambda x: (x.scatter(1, two_per_line, 1.0) + 1, x.scatter(1, part, 4.0) * 2), x)
    assert any("scatter" in name for r in reports for name in r.externs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_slice_and_select_scatter_fuse(dtype):
    x = torch.randn(3, 10, 6).to(dtype)
    part = torch.randn(3, 4, 6).to(dtype)
    line = torch.randn(3, 10).to(dtype)

    def fn(x, part, line):
        return (
            torch.slice_scatter(torch.zeros_like(x), part, 1, 3, 7) + x,
            torch.slice_scatter(x * 2, part, 1, -4) - 1,
            torch.slice_scatter(x, x[:, :, :2] * 5, -1, 4, 99).exp(),
            torch.select_scatter(x, line, 2, -1) * 3,
        )

    reports = check(fn, x, part, line, dtype=dtype)
    assert not any(r.externs for r in reports), [r.format() for r in reports]


def test_select_at_an_int_argument_made_symbolic_stays_right():
    # Under dynamic=True an int argument becomes a symbol whose sign is unknown (the size
    # assumptions would call it non-negative): such a select runs eagerly.
    def fn(x, i):
        return x.select(1, i) * 2, torch.select_scatter(x, x[:, 0] + 1, 1, i)

    compiled = torch.compile(fn, backend="tilefuse", dynamic=True)
    for n, i in ((5, -1), (9, -2), (9, 3)):
        x = torch.randn(3, n)
        for got, want in zip(compiled(x, i), fn(x, i)):
            torch.testing.assert_close(got, want)


def test_rotary_backward_has_no_eager_scatter():
    # rotate_half's backward is two slice_scatters into zeros (eager: a clone and a copy
    # each); lowered, they fuse into the kernels around them.
    from tilefuse.report import collect_reports

    def rotary(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    x = torch.randn(2, 4, 16, 8, requires_grad=True)
    cos, sin = torch.randn(16, 8), torch.randn(16, 8)
    with collect_reports() as reports:
        check_grad(rotary, x, cos, sin)
    assert not any(r.externs for r in reports), [r.format() for r in reports]


def test_cross_entropy_backward_is_two_kernels_and_no_copy():
    # The one-hot of nll_loss's backward fuses into the kernel that reads it; the forward
    # stores nothing the size of the logits (no log_softmax, no detached alias of it).
    from tilefuse.report import collect_reports

    logits = torch.randn(6, 1000, requires_grad=True)
    target = torch.tensor([0, 999, 5, -100, 17, 5])
    with collect_reports() as reports:
        check_grad(lambda x, t: F.cross_entropy(x, t), logits, target)
    assert not any(r.externs for r in reports), [r.format() for r in reports]
    forward = reports[0]
    assert "(6, 1000)" not in forward.wrapper, forward.wrapper


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_integer_and_bool_to_low_precision(dtype):
    x = torch.randn(7, 13).to(dtype)
    check(
        lambda x: (
            torch.arange(13, dtype=dtype) * x,
            (x > 0).to(dtype) + x,
            torch.arange(7)[:, None].to(dtype) - x,
        ),
        x,
        dtype=dtype,
    )


def _attention_scores(x, b):
    """A bias add on a fused QKV projection, split into heads (odd sizes), then ``q @ k^T``:
    its q/k buffers take eager's head-split order without the view's gaps, and the
    kernel that writes them walks memory in that order (``scheduler.group.place``)."""
    s, h, d = 13, 3, 5
    q, k, v = (x + b).split(h * d, dim=-1)
    q = q.reshape(2, s, h, d).transpose(1, 2).reshape(2 * h, s, d)
    k = k.reshape(2, s, h, d).permute(0, 2, 3, 1).reshape(2 * h, d, s)
    return torch.bmm(q, k), v.reshape(2, s, h, d).transpose(1, 2) * 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_head_split_of_a_fused_projection_matches_eager(dtype):
    x, b = torch.randn(2, 13, 45).to(dtype), torch.randn(45).to(dtype)
    check(_attention_scores, x, b)


def _as_strided_of_realized_views(x, b):
    """``as_strided`` counts offsets in eager's storage of its input: a realized head of
    a split (stored without eager's gaps and offset), its transpose, an explicit storage
    offset, and an expanded value (stored without eager's zero stride)."""
    _, k = (x + b).split(6, dim=1)
    e = (x[:, :5] + 1).unsqueeze(1).expand(4, 3, 5)
    return (
        k * 2,
        k.as_strided((4, 3), (12, 2)) + 1,
        k.as_strided((3, 3), (12, 1), 7) - 1,
        k.t().as_strided((3, 4), (1, 12)) * 3,
        e * 2,
        e.as_strided((4, 5), (5, 1)) + 1,
    )


def test_as_strided_of_a_realized_view_reads_eagers_elements():
    check(_as_strided_of_realized_views, torch.randn(4, 12), torch.randn(12))


def test_as_strided_of_an_input_view_with_a_storage_offset():
    """An input that is a view at a storage offset: an explicit offset counts in its
    storage, and the window may read past its own elements (the gaps of its base)."""
    base = torch.randn(4, 12)
    check(lambda k: torch.ops.aten.as_strided(k, (3, 4), (12, 2), 7) + 1, base[:, 6:])
    check(lambda k: k.as_strided((4, 2), (12, 3)) * 2, base[:, 6:])


def test_shared_index_math_is_recomputed_not_gathered():
    """An ``arange`` read by several indexing ops (a causal mask built from positions) is
    index math each consumer recomputes: no kernel writes it for the others to gather."""

    def fn(x, y):
        pos = torch.arange(x.shape[1]) + 1
        mask = pos[None, :] <= pos[:, None]
        return x.masked_fill(mask, 0.0) * 2, y[:, pos - 1] + 1

    x, y = torch.randn(9, 9), torch.randn(4, 9)
    reports = check(fn, x, y)
    assert kernel_count(reports) == 2, [r.format() for r in reports]  # one per output


def test_a_view_read_by_several_consumers_is_not_copied():
    """A GEMM result viewed as heads and transposed (a decoder's q before RoPE), read by
    three consumers: each reads the GEMM's buffer through the view's index; no kernel
    copies the view first: the GEMM and the rotary kernel are the only kernels."""

    def fn(x, w, cos, sin):
        q = (x @ w).view(2, 6, 4, 8).transpose(1, 2)
        rotated = torch.cat((-q[..., 4:], q[..., :4]), dim=-1)
        return q * cos + rotated * sin

    x, w = torch.randn(12, 32), torch.randn(32, 32)
    cos, sin = torch.randn(6, 8), torch.randn(6, 8)
    reports = check(fn, x, w, cos, sin)
    assert kernel_count(reports) == 2, [r.format() for r in reports]


@torch.library.custom_op("tilefuse_test::needs_unit_last_stride", mutates_args=())
def _needs_unit_last_stride(q: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Like the fused attention kernels' bias: refuses a last dim that is not unit-stride."""
    if bias.stride(-1) != 1:
        raise RuntimeError(f"bias: last dimension must be contiguous (strides {bias.stride()})")
    return q.sum(-1, keepdim=True) + bias.sum(-1, keepdim=True)


@_needs_unit_last_stride.register_fake
def _(q, bias):
    return q.new_empty((*q.shape[:-1], 1))


def test_an_expanded_value_realized_for_an_extern_keeps_a_unit_stride_last_dim():
    """An attention bias computed from a mask and expanded over heads (what SDPA's
    efficient kernel gets in a training graph) is realized for the extern op with the
    expanded dim outermost: with it innermost, the last dim was strided and the kernel
    refused it (llama's fp32 training step on the H200)."""

    def fn(q, mask):
        bias = torch.where(mask, 0.0, float("-inf")).expand(2, 4, 16, 16)
        return _needs_unit_last_stride(q, bias), bias * 2

    check(fn, torch.randn(2, 4, 16, 8), torch.rand(2, 1, 16, 16) > 0.5)


def test_embedding_backward_is_atens_kernel_not_an_index_put():
    # index_put(accumulate=True) sums each run of repeated ids serially on CUDA; ATen's
    # embedding backward does it in parallel. A single row read by every token is the
    # worst case (BERT's token types).
    from tilefuse.report import collect_reports

    w = torch.randn(5, 16, requires_grad=True)
    ids = torch.zeros(3, 7, dtype=torch.long)
    with collect_reports() as reports:
        check_grad(lambda ids, w: F.embedding(ids, w).sin(), ids, w)
    externs = {name for report in reports for name in report.externs}
    assert any("embedding_dense_backward" in name for name in externs), externs
    assert not any("index_put" in name for name in externs), externs


@pytest.fixture
def atomic_embedding_grads(monkeypatch):
    """The atomic-add embedding gradient on the CPU too (``index_add_`` is exact there)."""
    from tilefuse.frontend.lowerings import embedding_backward

    monkeypatch.setattr(embedding_backward, "ATOMIC_DEVICES", {"cuda", "cpu"})


def _embedding_grad_externs(fn, *inputs, dtype):
    """``check_grad(fn, ...)``, then the reasons of the embedding externs of both graphs."""
    from tilefuse.report import collect_reports

    with collect_reports() as reports:
        check_grad(fn, *inputs, dtype=dtype)
    return {name: why for r in reports for name, why in r.externs.items() if "embedding" in name}


@pytest.mark.parametrize("padding_idx", [None, 0, -2], ids=["no-padding", "padding0", "padding-2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_embedding_gradient_by_atomic_adds(atomic_embedding_grads, padding_idx, dtype):
    w = torch.randn(11, 16, dtype=dtype, requires_grad=True)
    ids = torch.tensor([[0, 3, 9, 3], [9, 0, 1, 3], [3, 3, 3, 3]])  # repeats, the padding row

    def fn(ids, w):
        return F.embedding(ids, w, padding_idx=padding_idx).tanh()

    externs = _embedding_grad_externs(fn, ids, w, dtype=dtype)
    assert list(externs.values()) == [
        "embedding gradients run as eager calls (zero fill + index_add_, atomic adds)"
    ], externs


@pytest.mark.parametrize("case", ["bfloat16", "scale_grad_by_freq", "deterministic"])
def test_embedding_gradient_stays_atens_where_atomic_adds_do_not_serve(
    atomic_embedding_grads, case, request
):
    dtype = torch.bfloat16 if case == "bfloat16" else torch.float32
    if case == "deterministic":
        was = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        torch.use_deterministic_algorithms(True, warn_only=True)
        request.addfinalizer(lambda: torch.use_deterministic_algorithms(was[0], warn_only=was[1]))
    w = torch.randn(11, 16, dtype=dtype, requires_grad=True)
    ids = torch.tensor([[0, 3, 9, 3], [9, 0, 1, 3]])
    by_freq = case == "scale_grad_by_freq"
    fn = lambda ids, w: F.embedding(ids, w, scale_grad_by_freq=by_freq) * 2  # noqa: E731
    externs = _embedding_grad_externs(fn, ids, w, dtype=dtype)
    assert list(externs.values()) == ["embedding gradients run as eager calls (ATen's kernel)"]


@pytest.mark.parametrize("padding_idx", [None, 1, -1], ids=["no-padding", "padding1", "padding-1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_a_small_tables_gradient_is_a_reduction_over_tokens(padding_idx, dtype):
    # BERT's token types: every token adds into one of two rows. No extern: a kernel sums
    # each row's tokens (any dtype, deterministic, on any device).
    w = torch.randn(3, 16, dtype=dtype, requires_grad=True)
    ids = torch.tensor([[0, 0, 2, 0], [2, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.int32)

    def fn(ids, w):
        return F.embedding(ids, w, padding_idx=padding_idx).tanh()

    assert _embedding_grad_externs(fn, ids, w, dtype=dtype) == {}


def test_a_small_tables_gradient_over_many_tokens_matches_eager():
    # long enough for the column sum to split; the last row is never named
    w = torch.randn(4, 24, requires_grad=True)
    ids = torch.randint(0, 3, (8, 600))
    check_grad(lambda ids, w: F.embedding(ids, w) * 2, ids, w)


@pytest.mark.parametrize("shapes", [((6, 8), (2, 3)), ((2, 3, 8), (6,))], ids=str)
def test_a_small_tables_gradient_flattens_grad_and_indices_as_aten_does(shapes):
    grad_shape, ids_shape = shapes
    grad, ids = torch.randn(grad_shape), torch.randint(0, 3, ids_shape)
    check(lambda g, i: torch.ops.aten.embedding_dense_backward(g, i, 3, -1, False), grad, ids)


def test_embedding_gradient_op_matches_atens_on_edge_shapes():
    """Empty rows, int32 indices, a transposed gradient, padding rows in and out of range."""
    from tilefuse.frontend.lowerings.embedding_backward import embedding_dense_backward_atomic as op

    cases = [
        (torch.randn(3, 0), torch.tensor([1, 2, 3]), 7, -1),  # embedding dim 0
        (torch.randn(0, 5), torch.zeros(0, dtype=torch.long), 4, 1),  # no indices
        (torch.randn(5, 6).t(), torch.tensor([0, 3, 3, 1, 0, 3], dtype=torch.int32), 4, 3),
        (torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [2, 1, 9]]), 10, 9),
        (torch.randn(4), torch.tensor(2), 5, 7),  # 0-d indices, padding_idx past the table
    ]
    for grad, ids, n, pad in cases:
        want = torch.ops.aten.embedding_dense_backward(grad, ids, n, pad, False)
        torch.testing.assert_close(op(grad, ids, n, pad), want)


def test_a_concatenated_slice_of_a_wide_buffer_keeps_its_condition():
    """Only a broadcast buffer's in-bounds loads drop their condition: each half of this
    ``cat`` reads a 16-column slice of a 64-column buffer, and unconditioned it would read
    the other 48 columns of every row too."""
    x, y = torch.randn(4, 64), torch.randn(4, 64)
    reports = check(lambda x, y: torch.cat([x[:, :16], y[:, :16]], 1) * 2, x, y)
    loads = [
        ln for r in reports for k in r.kernels for ln in k.source.splitlines() if "tl.load(" in ln
    ]
    assert len(loads) == 2 and all("other=0" in ln for ln in loads), loads


def test_one_hot_compiles_and_keeps_its_range_checks():
    # one_hot's decomposition checks its classes with _assert_async, an op that returns
    # nothing: it runs as an extern step that nothing reads and is not dropped.
    reports = check(lambda t, x: F.one_hot(t, 5).float() * x, torch.tensor([0, 3, 4, 1]),
                    torch.randn(4, 5))  # fmt: skip
    assert any("_assert_async" in name for r in reports for name in r.externs)
    compiled = torch.compile(lambda t: F.one_hot(t, 5).sum(0), backend="tilefuse")
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        compiled(torch.tensor([0, 7]))
