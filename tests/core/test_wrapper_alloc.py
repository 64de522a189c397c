"""The Python wrapper's allocations: PyTorch's fast allocators where the device has one
(CUDA: the graph's one device, made current for the call by a device guard), else
``torch.empty_strided`` naming the device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.compile_check import check
from tilefuse.codegen import wrapper
from tilefuse.ir.nodes import Buffer, Layout


def _writer(monkeypatch, *devices: str) -> wrapper.WrapperWriter:
    monkeypatch.setitem(wrapper._EMPTY_STRIDED_FAST, "cuda", lambda *a: None)
    buffers = [Buffer(f"buf{i}", _layout(d)) for i, d in enumerate(devices)]
    graph = SimpleNamespace(buffers=buffers, constants={}, inputs=[], outputs=[], scalars={})
    return wrapper.WrapperWriter(SimpleNamespace(graph=graph), {})


def _layout(device: str) -> Layout:
    return Layout.contiguous(torch.device(device), torch.float32, (4, 8))


def test_the_graphs_one_cuda_device_gets_the_fast_allocator(monkeypatch):
    writer = _writer(monkeypatch, "cuda:1", "cuda:1", "cpu")
    assert writer.cuda_device == 1
    assert writer.empty(_layout("cuda:1")) == "empty_strided_cuda((4, 8), (8, 1), torch.float32)"
    assert writer.empty(_layout("cpu")).startswith("empty_strided_cpu(")
    assert writer.empty(_layout("cuda:0")).startswith("empty_strided((4, 8), (8, 1), device=")


def test_the_guard_is_entered_for_the_call_and_left_however_it_ends():
    entered: list[tuple[str, int]] = []

    class Guard:
        def __init__(self, device: int) -> None:
            self.device = device

        def __enter__(self) -> None:
            entered.append(("in", self.device))

        def __exit__(self, *exc: object) -> None:
            entered.append(("out", self.device))

    body = ["    x, = args", "    if x < 0:", "        raise ValueError(x)", "    return (x,)"]
    lines = wrapper.with_device_guard(body, 3)
    module = wrapper.WrapperModule("\n".join(["def call(args):", *lines]) + "\n",
                                   {"_device_guard": Guard})  # fmt: skip
    call = module.build()
    assert call([5]) == (5,)
    try:
        call([-1])
    except ValueError:
        pass
    assert entered == [("in", 3), ("out", 3), ("in", 3), ("out", 3)]


def test_several_cuda_devices_name_each_buffers_device(monkeypatch):
    writer = _writer(monkeypatch, "cuda:0", "cuda:1")
    assert writer.cuda_device is None
    assert writer.empty(_layout("cuda:1")).startswith("empty_strided((4, 8), (8, 1), device=")


def test_cpu_graphs_allocate_with_the_fast_cpu_allocator():
    reports = check(lambda x: (x * 2).sum(1), torch.randn(5, 7))
    source = reports[0].wrapper
    if wrapper._EMPTY_STRIDED_FAST["cpu"] is not None:
        assert "empty_strided_cpu(" in source and "_device_guard" not in source, source


@pytest.mark.gpu
@pytest.mark.parametrize("index", [0, 1])
def test_a_cuda_graph_allocates_on_its_device_whatever_the_current_one(index):
    if torch.cuda.device_count() <= index:
        pytest.skip(f"needs {index + 1} CUDA GPUs")
    x = torch.randn(33, 65, device=f"cuda:{index}")
    with torch.cuda.device(1 - index if torch.cuda.device_count() > 1 else 0):
        reports = check(lambda x: ((x * 2).sin().sum(1), x.t() + 1), x)
    source = reports[0].wrapper
    assert "empty_strided_cuda(" in source and f"_device_guard({index})" in source, source
