"""``tilefuse.report.collect_reports``: a scoped view of the graphs compiled in a block."""

from __future__ import annotations

import threading

import pytest
import torch

import tilefuse
from tilefuse.report import GraphReport, KernelReport, collect_reports, publish


def test_each_block_sees_what_was_published_while_it_was_active():
    first, second, third = GraphReport(101), GraphReport(102), GraphReport(103)
    publish(first)  # no block active: kept by nobody
    with collect_reports() as outer:
        publish(second)
        with collect_reports() as inner:
            publish(third)
        publish(GraphReport(104))
    publish(GraphReport(105))
    assert [r.graph_id for r in outer] == [102, 103, 104]
    assert [r.graph_id for r in inner] == [103]


def test_nested_blocks_with_equal_lists_each_stop_their_own():
    # Inner and outer hold the same report when the inner block exits: lists compare
    # equal, and the outer one must go on collecting (a backward graph compiles later).
    with collect_reports() as outer:
        with collect_reports() as inner:
            publish(GraphReport(111))
        publish(GraphReport(112))
    publish(GraphReport(113))
    assert [r.graph_id for r in outer] == [111, 112]
    assert [r.graph_id for r in inner] == [111]


def test_a_block_sees_graphs_published_by_another_thread():
    # A backward graph may compile in autograd's device thread.
    with collect_reports() as reports:
        worker = threading.Thread(target=publish, args=(GraphReport(201),))
        worker.start()
        worker.join()
    assert [r.graph_id for r in reports] == [201]


def test_a_block_that_raises_stops_collecting():
    with pytest.raises(RuntimeError), collect_reports() as reports:
        raise RuntimeError("boom")
    publish(GraphReport(301))
    assert reports == []


def test_format_lists_kernels_refusals_and_externs():
    report = GraphReport(7, refusals=["vertical: b into [a]: no"], externs={"cumsum": "why"})
    report.kernels.append(KernelReport("k", "triton", "pointwise", ["a"], ["a"], ["add"], ""))
    text = report.format()
    assert text.startswith("graph 7: 1 kernel(s), 1 extern op(s)")
    assert "kernel k [triton, pointwise]: fuses a" in text
    assert "vertical: b into [a]: no" in text and "cumsum: why" in text


def test_compiles_inside_the_block_are_reported_and_others_are_not(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    torch._dynamo.reset()
    tilefuse.reset()
    x = torch.randn(3, 5)
    with collect_reports() as reports:
        out = torch.compile(lambda x: (x * 2).sin(), backend="tilefuse")(x)
    torch.testing.assert_close(out, (x * 2).sin())
    torch.compile(lambda x: x.cos() + 1, backend="tilefuse")(x)
    assert tilefuse.stats()["graphs_compiled"] == 2
    assert len(reports) == 1 and len(reports[0].kernels) == 1
    assert reports[0].kernels[0].kind == "pointwise"
