"""mode="reduce-overhead" through torch.compile and AOTAutograd on the CPU, with the CUDA
graph emulated (tests/cuda_graph_emulation.py) and the device check lifted: the runner's
static inputs, copies, output views and in-place updates against eager, forward and
backward. The real thing runs in tests/e2e/test_gpu_cuda_graphs.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tilefuse
from tests.compile_check import assert_same
from tests.cuda_graph_emulation import ReplayGraph
from tests.e2e.test_aliasing import (
    _input,
    _windows,
    flat_windows,
    row_and_column_blocks_of_copy,
    row_and_column_blocks_of_input,
    strided_windows,
    transposed_rows,
)


@pytest.fixture(autouse=True)
def emulated(monkeypatch):
    monkeypatch.setattr("tilefuse.cuda_graphs.refusal_reason", lambda gm, inputs: None)
    monkeypatch.setattr("tilefuse.cuda_graphs._CudaGraph", ReplayGraph)
    torch._dynamo.reset()
    tilefuse.reset()
    yield
    torch._dynamo.reset()


def compile_ro(fn):
    return torch.compile(fn, backend="tilefuse", mode="reduce-overhead")


def assert_replayed(graphs: int, replays: int) -> None:
    """``graphs`` graphs captured and ``replays`` replays, with no fallback. A graph may be
    captured again: an input that happened to land at its warm-up address (the caching
    allocator reuses blocks) is read in place until it moves, which costs one re-capture
    (documented in ``cuda_graphs``); a runner whose inputs keep moving falls back, which
    the fallback count catches. Every call after the warm-up replays either way."""
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0 and stats["cuda_graph_fallbacks"] == 0, stats
    assert stats["cuda_graphs_captured"] >= graphs, stats
    assert stats["cuda_graph_replays"] == replays, stats


def test_inference_over_calls_keeps_earlier_outputs():
    w = torch.randn(5, 3)

    def fn(x):
        return torch.tanh(x @ w) + x.sum(1, keepdim=True), x * 2

    compiled = compile_ro(fn)
    results, expected = [], []
    for _ in range(4):
        x = torch.randn(4, 5)
        expected.append(fn(x))
        results.append(compiled(x))
    for got, want in zip(results, expected):
        assert_same(got, want)
    assert_replayed(graphs=1, replays=3)


@pytest.mark.parametrize(
    "fn",
    [row_and_column_blocks_of_input, row_and_column_blocks_of_copy, flat_windows, transposed_rows],
)
def test_input_mutation_and_views_of_inputs(fn):
    """Each call's outputs are the same windows of memory as eager's (views of the
    caller's tensor where eager returns views of it) and the caller's tensor is updated."""
    compiled = compile_ro(fn)
    alive = []  # each call's input at a new address: the graph reads it through a copy
    for step in range(3):
        base, base_eager = torch.randn(30) + step, torch.zeros(30)
        alive.append(base)
        base_eager.copy_(base)
        expected = fn(_input(base_eager, "offset"))
        actual = compiled(_input(base, "offset"))
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = actual if isinstance(actual, tuple) else (actual,)
        for a, e in zip(actual, expected, strict=True):
            assert torch.equal(a, e)
        assert _windows(actual, base) == _windows(expected, base_eager)
        assert torch.equal(base, base_eager)
    assert_replayed(graphs=1, replays=2)


def test_graph_running_eagerly_counts_one_fallback(monkeypatch, caplog):
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)
    with caplog.at_level("WARNING", logger="tilefuse"):
        for _ in range(2):
            base, base_eager = torch.arange(30.0), torch.arange(30.0)
            expected = strided_windows(_input(base_eager, "offset"))
            assert torch.equal(compile_ro(strided_windows)(_input(base, "offset")), expected)
    assert tilefuse.stats()["cuda_graph_fallbacks"] == 1
    assert caplog.text.count("CUDA graphs") == 1 and "AOTAutograd could not trace" in caplog.text


def test_training_steps_match_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    twin = copy.deepcopy(model)
    compiled = compile_ro(twin)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin)]
    for _ in range(4):
        x, target = torch.randn(5, 6), torch.randn(5, 3)
        for run, opt in ((model, opts[0]), (compiled, opts[1])):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(run(x), target)
            loss.backward()
            opt.step()
        for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
            assert_same(b, a)
    # forward and backward: warm-up, capture + replay, two replays each
    assert_replayed(graphs=2, replays=6)


def test_symbolic_sizes_capture_each_shape_once_and_replay_it():
    def fn(x):
        return torch.tanh(x) * x.sum(-1, keepdim=True)

    compiled = compile_ro(fn)
    for rows in (4, 7, 4, 7, 4, 7):
        x = torch.randn(rows, 5)
        torch._dynamo.mark_dynamic(x, 0)
        assert_same(compiled(x), fn(x))
    assert tilefuse.stats()["graphs_compiled_symbolic"] == 1, tilefuse.stats()
    # per shape: warm-up, capture + replay, replay
    assert_replayed(graphs=2, replays=4)
