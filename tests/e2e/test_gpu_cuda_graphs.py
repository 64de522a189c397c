"""CUDA-graph replay (``mode="reduce-overhead"`` / option ``cuda_graphs``) on a real GPU,
against eager.

Run on a CUDA machine with ``pytest -m gpu tests/e2e/test_gpu_cuda_graphs.py``; skipped
elsewhere. Every test checks ``tilefuse.stats()``: the graphs really were captured and
replayed (``cuda_graphs_captured``, ``cuda_graph_replays``) and none fell back, except
the one test whose graph must fall back. The CPU half is tests/core/test_cuda_graphs.py
and tests/e2e/test_cuda_graphs.py.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import assert_same

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fresh_compile_state")]


def compile_cg(fn, cpp_wrapper: bool = False):
    """``fn`` compiled with CUDA graphs (the option: torch.compile takes a mode or options,
    and the C++ wrapper is an option)."""
    if cpp_wrapper:
        options = {"cuda_graphs": True, "cpp_wrapper": True}
        return torch.compile(fn, backend="tilefuse", options=options)
    return torch.compile(fn, backend="tilefuse", mode="reduce-overhead")


def assert_graphs(captured: int, replays: int, exact: bool = True) -> None:
    """Graphs captured (at least ``captured`` where not ``exact``: an input that lands at
    the address a "static" one had, then moves, costs a re-capture) and replays."""
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0 and stats["cuda_graph_fallbacks"] == 0, stats
    if exact:
        assert stats["cuda_graphs_captured"] == captured, stats
    else:
        assert stats["cuda_graphs_captured"] >= captured, stats
    assert stats["cuda_graph_replays"] == replays, stats


def cuda(*shape, dtype=torch.float32):
    return torch.randn(*shape, device="cuda", dtype=dtype)


@pytest.mark.parametrize("cpp_wrapper", [False, True], ids=["python", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inference_matches_eager_over_calls(cpp_wrapper, dtype, monkeypatch):
    if cpp_wrapper:  # template choices of the autotuner have no C++ launch: eager GEMM
        monkeypatch.setattr("tilefuse.codegen.templates.why_no_selector", lambda device: "test")
    w, b = cuda(64, 96, dtype=dtype), cuda(96, dtype=dtype)

    def fn(x, w=w, b=b):
        h = F.gelu(x @ w + b)
        return torch.softmax(h, -1) * 2, h.sum(0)

    compiled = compile_cg(fn, cpp_wrapper)
    xs = [cuda(33, 64, dtype=dtype) for _ in range(5)]  # alive: each at its own address
    for x in xs:
        if dtype == torch.float32:
            assert_same(compiled(x), fn(x), dtype)
            continue
        # bf16: the fused GEMM epilogue rounds once where eager rounds after each op, so
        # the two differ by more than bf16 rounding in h.sum(0) (a 33-term sum with
        # cancellation); judge both against float64 instead: no further than eager is.
        reference = fn(x.double(), w.double(), b.double())
        for got, eager, ref in zip(compiled(x), fn(x), reference):
            ours = (got.double() - ref).abs().max().item()
            theirs = (eager.double() - ref).abs().max().item()
            assert ours <= 2 * theirs + 1e-3, (ours, theirs)
    assert_graphs(captured=1, replays=4)
    if cpp_wrapper:
        stats = tilefuse.stats()
        assert stats["cpp_wrappers"] >= 1 and stats["cpp_wrapper_fallbacks"] == 0, stats


def test_outputs_of_a_call_survive_the_next_call():
    compiled = compile_cg(lambda x: (x.sin() + 1, x.cos().sum(-1)))
    outs = []
    for x in [cuda(257, 129) for _ in range(4)]:
        out = compiled(x)
        outs.append((out, (x.sin() + 1, x.cos().sum(-1))))
    for got, want in outs:  # replays rewrite the graph's own buffers, never handed-out ones
        assert_same(got, want)
    assert_graphs(captured=1, replays=3)


@pytest.mark.parametrize("same_tensor", [True, False], ids=["static", "copied"])
def test_inputs_mutated_in_place_are_updated(same_tensor):
    """The updated input is one tensor on every call (read and written in place) or a new
    one each call (read through a static buffer, the update copied back)."""

    def fn(acc, x):
        acc.add_(x * 2)
        return acc.relu()

    compiled = compile_cg(fn)
    acc = cuda(1000)
    acc_eager = acc.clone()
    kept = []
    for _ in range(4):
        if not same_tensor:
            acc = cuda(1000)
            acc_eager = acc.clone()
            kept.append(acc)
        x = cuda(1000)
        want = fn(acc_eager, x)
        got = compiled(acc, x)
        assert_same(acc, acc_eager)
        assert_same(got, want)
    assert_graphs(captured=1, replays=3, exact=same_tensor)


def test_a_new_shape_is_captured_again():
    def fn(x):
        return torch.tanh(x) * x.mean(-1, keepdim=True)

    compiled = compile_cg(fn)
    for x in [cuda(rows, 80) for rows in (16, 16, 16, 48, 48, 48)]:
        assert_same(compiled(x), fn(x))
    stats = tilefuse.stats()
    assert stats["cuda_graph_fallbacks"] == 0, stats
    assert stats["cuda_graphs_captured"] == 2 and stats["cuda_graph_replays"] == 4, stats


def test_symbolic_sizes_replay_each_shape_with_its_own_graph():
    def fn(x):
        return torch.tanh(x) * x.mean(-1, keepdim=True)

    compiled = compile_cg(fn)
    for rows in (16, 48, 16, 48, 16, 48):
        x = cuda(rows, 80)
        torch._dynamo.mark_dynamic(x, 0)
        assert_same(compiled(x), fn(x))
    assert tilefuse.stats()["graphs_compiled_symbolic"] == 1, tilefuse.stats()
    # per shape: warm-up, capture + replay, replay (a re-capture where an input first
    # landed at its warm-up address, then moved)
    assert_graphs(captured=2, replays=4, exact=False)
    assert tilefuse.stats()["cuda_graphs_evicted"] == 0


def test_training_steps_match_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128),
        torch.nn.LayerNorm(128),
        torch.nn.GELU(),
        torch.nn.Linear(128, 10),
    ).cuda()
    twin = copy.deepcopy(model)
    compiled = compile_cg(twin)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (model, twin)]
    steps = 6
    for _ in range(steps):
        x, target = cuda(32, 64), torch.randint(0, 10, (32,), device="cuda")
        losses = []
        for run, opt in ((model, opts[0]), (compiled, opts[1])):
            opt.zero_grad()
            loss = F.cross_entropy(run(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        assert_same(losses[1], losses[0])
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    # forward and backward: warm-up, capture + replay, then one replay per step
    assert_graphs(captured=2, replays=2 * (steps - 1), exact=False)


def test_graph_with_a_syncing_op_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)  # e2e tests force strict

    def fn(x):
        y = (x * 2).cpu()  # a device-to-host copy: it synchronizes, which capture forbids
        return y.to(x.device) + 1

    compiled = compile_cg(fn)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        for _ in range(4):
            x = cuda(100)
            assert_same(compiled(x), fn(x))
    stats = tilefuse.stats()
    assert stats["cuda_graph_fallbacks"] == 1 and stats["cuda_graph_replays"] == 0, stats
    warned = [r.getMessage() for r in caplog.records if "CUDA graphs" in r.getMessage()]
    assert len(warned) == 1 and "capturing it failed" in warned[0], warned
    after = cuda(10)  # the current stream is the caller's again, and usable
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert_same(after * 2, after + after)


def test_environment_variable_turns_graphs_on(monkeypatch):
    monkeypatch.setenv("TILEFUSE_CUDA_GRAPHS", "1")
    compiled = torch.compile(lambda x: x.exp() - 1, backend="tilefuse")
    for x in [cuda(64) for _ in range(3)]:
        assert_same(compiled(x), x.exp() - 1)
    assert_graphs(captured=1, replays=2)


def test_a_cpu_scalar_input_is_refused_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)  # e2e tests force strict
    compiled = compile_cg(lambda x, s: x * s + 1)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        for value in (2.0, 3.0, 4.0):
            x, s = cuda(50), torch.tensor(value)
            assert_same(compiled(x, s), x * s + 1)
    stats = tilefuse.stats()
    assert stats["cuda_graph_fallbacks"] >= 1 and stats["cuda_graphs_captured"] == 0, stats
    warned = [r.getMessage() for r in caplog.records if "CUDA graphs" in r.getMessage()]
    assert len(warned) == 1 and "cpu tensor input" in warned[0], warned


def test_dropout_draws_new_numbers_on_every_replay():
    p = 0.25
    compiled = compile_cg(lambda x: F.dropout(x, p=p, training=True))
    x = torch.ones(256, 1024, device="cuda")
    outs = [compiled(x) for _ in range(5)]
    stats = tilefuse.stats()
    assert stats["cuda_graphs_captured"] == 1 and stats["cuda_graph_replays"] == 4, stats
    for out in outs:
        assert out.shape == x.shape
        kept = (out != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 0.01, kept
        scale = torch.tensor(1 / (1 - p), device="cuda")
        assert torch.all((out == 0) | torch.isclose(out, scale))
    replayed = outs[2:]  # both from replays of one graph
    assert not torch.equal(replayed[0], replayed[1])
    assert not torch.equal(outs[1], outs[2])


def test_dropout_in_training_mode_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.Dropout(0.5)).cuda().train()
    compiled = compile_cg(model)
    x = cuda(64, 128)
    masks = []
    for _ in range(4):
        out = compiled(x)
        out.sum().backward()
        masks.append(out != 0)
    kept = torch.stack(masks).float().mean().item()
    assert abs(kept - 0.5) < 0.02, kept
    assert not torch.equal(masks[2], masks[3])
    assert tilefuse.stats()["cuda_graph_fallbacks"] == 0, tilefuse.stats()
