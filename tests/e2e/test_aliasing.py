"""Views that overlap in memory, one mutated in place and another returned: the
returned view is the same window of memory as in eager, and the caller's tensor (the
base of an input view, storage offset included) ends up as eager leaves it."""

from __future__ import annotations

import pytest
import torch

from tests.compile_check import assert_compiled, compiled_reports


def strided_windows(x):
    a = x.view(-1).as_strided((2, 4), (8, 1))
    b = x.view(-1).as_strided((2, 4), (8, 1), 2)
    a.add_(1)
    return b


def row_and_column_blocks_of_input(x):
    a, b = x[1:, :2], x[:3, 1:]
    a.mul_(2)
    return b, a


def row_and_column_blocks_of_copy(x):
    y = x.clone()
    a, b = y[1:, :2], y[:3, 1:]
    a.mul_(2)
    return b, a


def flat_windows(x):
    a, b = x.view(-1)[2:9], x.view(-1)[5:12]
    a.add_(1)
    return b


def transposed_rows(x):
    a, b = x.t()[1:], x[1:]
    a.add_(1)
    return b


def _input(base: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "offset":
        return base[5:21].view(4, 4)
    return base[:16].view(4, 4)


def _windows(outputs: tuple[torch.Tensor, ...], base: torch.Tensor) -> list[tuple]:
    """Each output's window of memory: which storage (the caller's base, or the first
    output with that storage) and its element offset and strides there."""
    storages = [base.untyped_storage().data_ptr()]
    offsets = [base.storage_offset()]
    windows = []
    for out in outputs:
        ptr = out.untyped_storage().data_ptr()
        if ptr not in storages:
            storages.append(ptr)
            offsets.append(out.storage_offset())
        which = storages.index(ptr)
        windows.append((which, out.storage_offset() - offsets[which], out.stride()))
    return windows


@pytest.mark.parametrize("layout", ["contiguous", "offset"])
@pytest.mark.parametrize(
    "fn",
    [
        row_and_column_blocks_of_input,
        row_and_column_blocks_of_copy,
        flat_windows,
        transposed_rows,
    ],
)
def test_overlapping_views(fn, layout):
    base, base_eager = torch.arange(30.0), torch.arange(30.0)
    expected = fn(_input(base_eager, layout))
    actual, _ = compiled_reports(fn, _input(base, layout))
    assert_compiled()
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)
    assert _windows(actual, base) == _windows(expected, base_eager)
    assert torch.equal(base, base_eager)


def test_graph_torch_cannot_functionalize_runs_eagerly(monkeypatch, caplog):
    """A mutation through an ``as_strided`` view is banned by AOTAutograd: outside strict
    mode the graph runs eagerly with one warning instead of raising."""
    import tilefuse

    monkeypatch.setattr("tilefuse.config.strict", lambda: False)
    base, base_eager = torch.arange(30.0), torch.arange(30.0)
    expected = strided_windows(_input(base_eager, "offset"))
    torch._dynamo.reset()
    tilefuse.reset()
    with caplog.at_level("WARNING", logger="tilefuse"):
        actual = torch.compile(strided_windows, backend="tilefuse")(_input(base, "offset"))
    assert torch.equal(actual, expected) and torch.equal(base, base_eager)
    assert "as_strided" in caplog.text and "running it eagerly" in caplog.text
    assert tilefuse.stats()["graphs_fallen_back"] == 1


def _bits_and_more(x):
    u = (x * 2).view(torch.uint32)  # an extern whose result views its input's memory
    s = u.view(torch.float32).sum()
    return u.view(torch.float32), (x + s).view(torch.uint32).view(torch.float32)


def _complex_pairs(x):
    u = torch.view_as_complex(x * 2)
    s = torch.view_as_real(u).sum()
    return u, torch.view_as_complex(x + s)


@pytest.mark.parametrize(
    "fn", [_bits_and_more, _complex_pairs], ids=["view-dtype", "view-as-complex"]
)
def test_a_returned_extern_view_keeps_the_memory_it_views(fn):
    """The wrapper handed the buffer under an extern's view result to a later buffer of
    the same layout (the returned view then held the later values): such inputs now live
    as long as the result, and are never reused when it is returned."""
    x = torch.arange(8.0).reshape(4, 2)
    expected = fn(x)
    actual, _ = compiled_reports(fn, x)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)
