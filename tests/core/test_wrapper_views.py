"""The Python wrapper's strided windows: ``reinterpret`` for what it passes to kernels,
``as_strided`` (a tracked view) for what it returns."""

from __future__ import annotations

import pytest
import torch

from tests.compile_check import check
from tilefuse.codegen import wrapper


@pytest.mark.parametrize("make", [wrapper._fast_reinterpret, lambda: wrapper._as_strided_from])
def test_a_window_is_offset_from_the_tensors_own_offset(make):
    reinterpret = make()
    base = torch.arange(20.0)[4:]  # storage offset 4
    window = reinterpret(base, (2, 3), (3, 1), 2)
    assert window.storage_offset() == 6
    assert window.tolist() == [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]
    window.zero_()  # shares the storage
    assert base[2:8].tolist() == [0.0] * 6


def test_inner_windows_are_reinterpreted_and_returned_ones_are_views():
    x, w, r = torch.randn(9, 16), torch.randn(16, 12), torch.randn(1, 9, 12)

    def fn(x, w, r):
        y = (x @ w).view(1, 9, 12) + r
        return y, y[0].t()

    reports = check(fn, x, w, r)
    source = "\n".join(rep.wrapper for rep in reports)
    assert "reinterpret(" in source, source
    assert "_as_strided_from(" in source, source  # the returned transpose
