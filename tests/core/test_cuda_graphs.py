"""CUDA-graph replay (tilefuse.cuda_graphs) on the CPU: settings, refusals, and the runner's
bookkeeping (static inputs, copies, outputs, mutations) against an emulated graph.

``ReplayGraph`` (tests/cuda_graph_emulation.py) stands in for a CUDA graph. The GPU half
is tests/e2e/test_gpu_cuda_graphs.py.
"""

from __future__ import annotations

import logging

import pytest
import torch

import tilefuse
from tests.cuda_graph_emulation import ReplayGraph
from tilefuse import config, cuda_graphs
from tilefuse.compile_options import parse
from tilefuse.cuda_graphs import CudaGraphRunner, ShapeRunners
from tilefuse.errors import CudaGraphsRefused, TilefuseError


class FailingGraph:
    def capture(self, fn, args):
        raise RuntimeError("operation not permitted when stream is capturing")

    def replay(self):  # pragma: no cover - never captured
        raise AssertionError


def boxed(fn):
    """``fn(*args)`` as a compiled graph is called: with a list it empties."""

    def call(args):
        values = list(args)
        args.clear()
        return fn(*values)

    return call


def runner(fn, mutated=frozenset(), strict=False, graph=ReplayGraph, warnings=None):
    warn = (warnings if warnings is not None else []).append
    return CudaGraphRunner(boxed(fn), frozenset(mutated), strict, warn, graph)


@pytest.fixture(autouse=True)
def fresh_stats():
    tilefuse.reset()
    yield
    tilefuse.reset()


# ---- settings -------------------------------------------------------------------------------


def test_reduce_overhead_mode_turns_cuda_graphs_on_and_an_option_overrides_it():
    assert parse("reduce-overhead", None) == {"cuda_graphs": True}
    assert parse("reduce-overhead", {"cuda_graphs": False})["cuda_graphs"] is False
    assert "cuda_graphs" not in parse("default", None)
    with config.overrides(parse("reduce-overhead", None)):
        assert config.cuda_graphs() is True
    with pytest.raises(TilefuseError, match="'cuda_graphs'='yes' is invalid"):
        parse(None, {"cuda_graphs": "yes"})


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("TILEFUSE_CUDA_GRAPHS", "on")
    assert config.cuda_graphs() is True
    monkeypatch.setenv("TILEFUSE_CUDA_GRAPHS", "0")
    assert config.cuda_graphs() is False
    with config.overrides({"cuda_graphs": True}):
        assert config.cuda_graphs() is True
    monkeypatch.setenv("TILEFUSE_CUDA_GRAPHS", "sometimes")
    with pytest.raises(TilefuseError, match="TILEFUSE_CUDA_GRAPHS='sometimes' is not a boolean"):
        config.cuda_graphs()


def test_counters_are_standard():
    stats = tilefuse.stats()
    for name in (
        "cuda_graphs_captured",
        "cuda_graph_replays",
        "cuda_graph_fallbacks",
        "cuda_graphs_evicted",
    ):
        assert stats[name] == 0


# ---- refusals decided before any call ------------------------------------------------------


def _traced(fn, *inputs):
    gm = torch.fx.symbolic_trace(fn)
    for node, value in zip((n for n in gm.graph.nodes if n.op == "placeholder"), inputs):
        node.meta["val"] = value
    return gm


def test_refusal_reasons():
    x = torch.randn(3)
    gm = _traced(lambda a: a + 1, x)
    assert "cpu tensor input" in cuda_graphs.refusal_reason(gm, [x])
    assert "no CUDA tensor input" in cuda_graphs.refusal_reason(gm, [3])
    meta = torch.empty(3, device="meta")
    assert "meta tensor input" in cuda_graphs.refusal_reason(gm, [meta])


def test_refuse_counts_and_warns_or_raises_in_strict_mode():
    said = []
    cuda_graphs.refuse("it has a cpu tensor input", False, said.append)
    assert tilefuse.stats()["cuda_graph_fallbacks"] == 1
    assert len(said) == 1 and "cpu tensor input" in said[0] and "without them" in said[0]
    with pytest.raises(CudaGraphsRefused, match="cpu tensor input.*without mode='reduce-overhead"):
        cuda_graphs.refuse("it has a cpu tensor input", True, said.append)


def test_mutated_inputs_come_from_the_op_schemas():
    graph = torch.fx.Graph()
    a, b = graph.placeholder("a"), graph.placeholder("b")
    graph.call_function(torch.ops.aten.add_.Tensor, (b, a))
    graph.output((graph.call_function(torch.ops.aten.mul.Tensor, (a, b)),))
    gm = torch.fx.GraphModule({}, graph)
    assert cuda_graphs.mutated_inputs(gm) == frozenset({1})


# ---- the runner ----------------------------------------------------------------------------


def test_replays_follow_changing_inputs_and_outputs_are_not_clobbered():
    weight = torch.randn(4)
    run = runner(lambda w, x: (x * w + 1, x.sum()))
    results, expected = [], []
    for step in range(5):
        x = torch.randn(4) + step
        expected.append((x * weight + 1, x.sum()))
        results.append(run([weight, x]))
    for got, want in zip(results, expected):  # every earlier call's outputs still hold
        torch.testing.assert_close(got, want)
    stats = tilefuse.stats()
    assert stats["cuda_graphs_captured"] == 1
    assert stats["cuda_graph_replays"] == 4  # warm-up, then capture + replay, then 3 replays
    assert stats["cuda_graph_fallbacks"] == 0
    assert run.static == {0}  # the weight kept its address; x did not


def test_static_input_is_read_in_place():
    weight = torch.ones(3)
    run = runner(lambda w, x: (w * x,))
    x = torch.full((3,), 2.0)
    run([weight, x.clone()])
    run([weight, x.clone()])
    weight.mul_(5)  # an optimizer step: same address, new values
    (out,) = run([weight, x.clone()])
    torch.testing.assert_close(out, torch.full((3,), 10.0))
    assert run.static == {0} and run.buffers[0] is None  # checked each call, not kept alive


def test_static_input_that_moves_is_demoted_and_captured_again():
    weight = torch.ones(3)
    run = runner(lambda w, x: (w + x,))
    x = torch.zeros(3)
    run([weight, x])
    run([weight, x])
    moved = torch.full((3,), 7.0)
    (out,) = run([moved, x])
    torch.testing.assert_close(out, torch.full((3,), 7.0))
    assert tilefuse.stats()["cuda_graphs_captured"] == 2 and 0 not in run.static
    (out,) = run([torch.full((3,), 2.0), x])
    torch.testing.assert_close(out, torch.full((3,), 2.0))
    assert tilefuse.stats()["cuda_graphs_captured"] == 2


def test_outputs_that_view_inputs_view_the_callers_tensors():
    run = runner(lambda x: (x[1:], x * 2))
    for _ in range(3):
        x = torch.arange(5.0)
        view, doubled = run([x])
        assert view.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert view.storage_offset() == x.storage_offset() + 1
        torch.testing.assert_close(view, x[1:])
        torch.testing.assert_close(doubled, x * 2)


def test_outputs_that_share_a_buffer_still_share_one_copy():
    def fn(x):
        y = x * 3
        return y, y[2:], y.view(2, 3)

    run = runner(fn)
    for _ in range(3):
        x = torch.randn(6)
        y, tail, square = run([x])
        torch.testing.assert_close(tail, (x * 3)[2:])
        torch.testing.assert_close(square, (x * 3).view(2, 3))
        assert tail.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
        assert tail.storage_offset() == 2


def test_inputs_written_in_place_update_the_callers_tensors():
    def fn(acc, x):
        acc.add_(x)
        return (acc * 1,)

    run = runner(fn, mutated={0})
    total = torch.zeros(3)
    for step in range(4):
        acc = torch.full((3,), float(step))  # a new tensor each call: copied, not static
        (out,) = run([acc, torch.ones(3)])
        torch.testing.assert_close(acc, torch.full((3,), step + 1.0))
        torch.testing.assert_close(out, acc)
        total += 1
    assert tilefuse.stats()["cuda_graph_replays"] == 3


def test_expanded_inputs_are_copied():
    run = runner(lambda x: (x + 0,))
    for value in (1.0, 2.0, 3.0):
        x = torch.tensor([value]).expand(4, 3)
        (out,) = run([x])
        torch.testing.assert_close(out, torch.full((4, 3), value))


def test_a_failed_capture_runs_without_graphs_with_one_warning():
    said = []
    run = runner(lambda x: (x + 1,), graph=FailingGraph, warnings=said)
    for value in range(4):
        x = torch.full((2,), float(value))
        torch.testing.assert_close(run([x])[0], x + 1)
    assert run.state == "direct"
    assert len(said) == 1 and "capturing it failed" in said[0]
    assert "operation not permitted" in said[0]
    stats = tilefuse.stats()
    assert stats["cuda_graph_fallbacks"] == 1 and stats["cuda_graphs_captured"] == 0


def test_a_failed_capture_raises_in_strict_mode():
    run = runner(lambda x: (x + 1,), graph=FailingGraph, strict=True)
    run([torch.zeros(2)])
    with pytest.raises(CudaGraphsRefused, match="capturing it failed"):
        run([torch.zeros(2)])


def test_a_graph_running_eagerly_is_not_captured():
    said = []
    inner = boxed(lambda x: (x + 1,))

    class Eager:
        running_eagerly = True

        def __call__(self, args):
            return inner(args)

    run = CudaGraphRunner(Eager(), frozenset(), False, said.append, ReplayGraph)
    for _ in range(3):
        torch.testing.assert_close(run([torch.ones(2)])[0], torch.full((2,), 2.0))
    assert run.state == "direct" and "runs eagerly" in said[0]
    assert tilefuse.stats()["cuda_graph_fallbacks"] == 1


def test_changed_scalar_argument_runs_without_the_graph_for_that_call():
    said = []
    run = runner(lambda x, k: (x * k,), warnings=said)
    x = torch.ones(2)
    run([x, 2])
    run([x, 2])
    torch.testing.assert_close(run([x, 3])[0], torch.full((2,), 3.0))
    assert "non-tensor argument 1 changed" in said[0]
    torch.testing.assert_close(run([x, 2])[0], torch.full((2,), 2.0))
    assert tilefuse.stats()["cuda_graph_replays"] == 2


# ---- one runner per shape (graphs with symbolic sizes) -------------------------------------


def shape_runners(fn, max_shapes=4, graph=ReplayGraph, warnings=None):
    warn = (warnings if warnings is not None else []).append
    compiled = boxed(fn)
    return ShapeRunners(
        lambda: CudaGraphRunner(compiled, frozenset(), False, warn, graph),
        compiled,
        max_shapes,
        warn,
    )


def test_each_shape_is_captured_once_and_replayed_with_its_own_graph():
    run = shape_runners(lambda x, n: (x * 2 + n,))
    results, expected = [], []
    for rows in (3, 5, 3, 5, 3, 5, 3):
        x = torch.randn(rows, 2)
        expected.append((x * 2 + rows,))
        results.append(run([x, rows]))
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want)
    stats = tilefuse.stats()
    assert stats["cuda_graphs_captured"] == 2, stats
    # each shape: warm-up, capture + replay, then replays (rows 3: 4 calls, rows 5: 3)
    assert stats["cuda_graph_replays"] == 3 + 2, stats
    assert stats["cuda_graph_fallbacks"] == 0 and stats["cuda_graphs_evicted"] == 0, stats
    assert len(run.runners) == 2


def test_the_least_recently_used_shape_is_dropped_beyond_the_limit():
    said = []
    run = shape_runners(lambda x: (x + 1,), max_shapes=2, warnings=said)
    for rows in (3, 3, 5, 5, 7, 3, 3):  # 7 drops 3's graph, then 3 drops 5's
        x = torch.randn(rows)
        torch.testing.assert_close(run([x])[0], x + 1)
    stats = tilefuse.stats()
    assert stats["cuda_graphs_evicted"] == 2, stats
    assert stats["cuda_graphs_captured"] == 3, stats  # 3, 5, and 3 again after its warm-up
    assert stats["cuda_graph_replays"] == 3, stats
    assert len(run.runners) == 2 and "TILEFUSE_MAX_SPECIALIZATIONS" in said[0]


def test_a_refused_shape_turns_graphs_off_for_every_shape():
    said = []
    run = shape_runners(lambda x: (x + 1,), graph=FailingGraph, warnings=said)
    for rows in (3, 3, 5, 5, 5):
        x = torch.randn(rows)
        torch.testing.assert_close(run([x])[0], x + 1)
    assert run.direct and len(run.runners) == 0
    assert len(said) == 1 and "capturing it failed" in said[0]
    stats = tilefuse.stats()
    assert stats["cuda_graph_fallbacks"] == 1 and stats["cuda_graphs_captured"] == 0, stats


def test_a_call_inside_a_users_capture_makes_no_runner(monkeypatch):
    run = shape_runners(lambda x: (x + 1,), max_shapes=1)
    for _ in range(3):  # shape 3: warm-up, capture, replay
        run([torch.ones(3)])
    monkeypatch.setattr(CudaGraphRunner, "_capturing", staticmethod(lambda: True))
    torch.testing.assert_close(run([torch.ones(5)])[0], torch.full((5,), 2.0))
    monkeypatch.undo()
    assert len(run.runners) == 1 and tilefuse.stats()["cuda_graphs_evicted"] == 0
    run([torch.ones(3)])  # shape 3's graph was kept: a replay, no new capture
    stats = tilefuse.stats()
    assert stats["cuda_graphs_captured"] == 1 and stats["cuda_graph_replays"] == 3, stats


# ---- through torch.compile on the CPU ------------------------------------------------------


def test_cpu_graph_under_reduce_overhead_runs_without_graphs_and_warns_once(caplog):
    torch._dynamo.reset()
    fn = torch.compile(lambda x: torch.relu(x) * 2 + 1, backend="tilefuse", mode="reduce-overhead")
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        for _ in range(3):
            x = torch.randn(7)
            torch.testing.assert_close(fn(x), torch.relu(x) * 2 + 1)
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0
    assert stats["cuda_graph_fallbacks"] == 1 and stats["cuda_graphs_captured"] == 0
    warned = [r for r in caplog.records if "CUDA graphs" in r.getMessage()]
    assert len(warned) == 1 and "cpu tensor input" in warned[0].getMessage()
    torch._dynamo.reset()


def test_cpu_graph_with_cuda_graphs_option_raises_in_strict_mode(monkeypatch):
    # torch.compile takes a mode or options, not both: strict comes from the environment.
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2, backend="tilefuse", options={"cuda_graphs": True})
    with pytest.raises(Exception, match="cpu tensor input"):
        fn(torch.randn(3))
    torch._dynamo.reset()
