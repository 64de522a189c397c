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
    returned = [line for line in source.splitlines() if "storage_offset()" in line]
    assert len(returned) == 1 and ".as_strided(" in returned[0], source  # the transpose
    if wrapper._reinterpret is not wrapper._as_strided_from:  # this torch has the helper
        assert "reinterpret(" in source, source


def test_without_the_fast_helper_windows_are_inline_as_strided(monkeypatch):
    # A torch without PyTorch's reinterpret helper: no extra Python call per window.
    monkeypatch.setattr(wrapper, "_reinterpret", wrapper._as_strided_from)
    x, w, r = torch.randn(9, 16), torch.randn(16, 12), torch.randn(1, 9, 12)
    reports = check(lambda x, w, r: (x @ w).view(1, 9, 12) + r, x, w, r)
    source = "\n".join(rep.wrapper for rep in reports)
    assert "reinterpret(" not in source and ".as_strided(" in source, source


def test_the_helper_probe_works_under_dynamos_fake_mode():
    # The wrapper module is first imported while Dynamo compiles, inside its FakeTensorMode;
    # the probe there once failed, and every call of every graph paid ``as_strided``.
    from torch._subclasses.fake_tensor import FakeTensorMode

    outside = wrapper._fast_reinterpret()
    with FakeTensorMode(), torch.device("meta"):
        inside = wrapper._fast_reinterpret()
    assert inside is outside
