"""Unit tests of the scheduler: fusion legality, candidate scoring and the memory plan.

Graphs are traced with ``make_fx`` and lowered on fake CPU tensors; no backend runs: the
``can_fuse`` answer is a function of the test. End-to-end fusion results (kernel counts
and values against eager) are in ``tests/e2e/test_fusion.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from tilefuse.frontend import lowerings  # noqa: F401  (registers every lowering)
from tilefuse.frontend.lowering import GraphLowering
from tilefuse.plugin import Verdict
from tilefuse.scheduler import ExternStep, FusedGroup, schedule_graph


def _yes(kind, group, node) -> Verdict:
    return Verdict.yes()


def _schedule(fn, *shapes, can_fuse=_yes, policy=None):
    with FakeTensorMode():
        inputs = [torch.empty(s) for s in shapes]
        gm = make_fx(fn)(*inputs)
        graph = GraphLowering(gm, inputs).run()
    return graph, schedule_graph(graph, can_fuse, policy)


def _kernels(schedule) -> list[FusedGroup]:
    return [s for s in schedule.steps if isinstance(s, FusedGroup)]


def _output_names(graph) -> set[str]:
    return {b.name for b in graph.outputs}


def _two_nodes(x):
    """``y`` has two users, so lowering realizes it: two scheduler nodes, y and the sum."""
    y = x * 2
    return y.sin() + y.cos()


# -- legality ------------------------------------------------------------------------


def test_a_pointwise_chain_is_one_kernel_that_stores_only_the_result() -> None:
    graph, schedule = _schedule(_two_nodes, (8, 16))
    (kernel,) = _kernels(schedule)
    assert kernel.kind() == "pointwise"
    assert len(kernel.nodes) == 2
    assert set(kernel.stores) == _output_names(graph)
    assert set(schedule.fused_away) == set(kernel.names) - set(kernel.stores)


def test_a_row_reduction_and_its_broadcast_consumer_share_one_kernel() -> None:
    graph, schedule = _schedule(lambda x: x - x.sum(1, keepdim=True), (8, 16))
    (kernel,) = _kernels(schedule)
    assert kernel.kind() == "reduction"
    assert (int(kernel.xnumel), int(kernel.rnumel)) == (8, 16)
    levels = {kernel.placements[n].level for n in kernel.names}
    assert levels == {"red", "xr"}


def test_a_reduction_over_the_other_dim_of_a_reduced_value_is_refused_with_the_reason() -> None:
    _, schedule = _schedule(lambda x: x.sum(1).sum(0), (8, 16))
    assert len(_kernels(schedule)) == 2
    reasons = [r.reason for r in schedule.refusals]
    assert any("does not fit the iteration space" in r for r in reasons), reasons


def test_a_backend_refusal_splits_the_kernel_and_is_recorded() -> None:
    def never(kind, group, node) -> Verdict:
        return Verdict.no("this backend fuses nothing")

    _, schedule = _schedule(_two_nodes, (4, 4), can_fuse=never)
    assert len(_kernels(schedule)) == 2
    assert [r.reason for r in schedule.refusals] == ["backend refused: this backend fuses nothing"]
    assert [r.kind for r in schedule.refusals] == ["vertical"]


def test_horizontal_fusion_joins_kernels_that_read_the_same_input() -> None:
    graph, schedule = _schedule(lambda x: (x.sin(), x.cos()), (32,))
    (kernel,) = _kernels(schedule)
    assert set(kernel.stores) == _output_names(graph)


def _head_split(x, b):
    """GPT-2's attention prologue: a bias add on a fused QKV projection, split into heads;
    ``k`` transposed for ``q @ k^T``. Eager's q/k are views with gaps into the [S, 3*H*D]
    sum, and the bmm makes each a buffer."""
    s, h, d = 16, 2, 8
    q, k, _ = (x + b).split(h * d, dim=1)
    return torch.bmm(q.view(s, h, d).transpose(0, 1), k.view(s, h, d).permute(1, 2, 0))


def test_a_head_split_is_stored_dense_and_walked_in_memory_order() -> None:
    import sympy

    from tilefuse.ir.nodes import dense_strides_like
    from tilefuse.kernel_spec import X
    from tilefuse.scheduler.group import simplified

    graph, schedule = _schedule(_head_split, (16, 48), (48,))
    (kernel,) = _kernels(schedule)
    strides = {n.name: tuple(n.buffer.layout.stride) for n in kernel.nodes}
    assert sorted(strides.values()) == [(8, 1, 16), (8, 16, 1)]  # eager's order, no gaps
    for node in kernel.nodes:
        store = kernel.placements[node.name].store_index
        assert sympy.simplify(simplified(store, kernel) - X) == 0, (node.name, store)
    assert dense_strides_like((2, 16, 8), (8, 48, 1)) == (8, 16, 1)
    assert dense_strides_like((2, 1, 8), (8, 7, 1)) == (8, 7, 1)  # a size-1 dim keeps its own
    # An expanded dim goes outermost; the rest keep their order (the last one unit-stride).
    assert dense_strides_like((2, 4, 16, 16), (256, 0, 16, 1)) == (256, 512, 16, 1)


# -- scoring and policy --------------------------------------------------------------


@dataclass
class _RecordingPolicy:
    name: str = "recorder"
    keep: bool = True
    seen: list = field(default_factory=list)

    def rank_fusions(self, candidates):
        self.seen.append(list(candidates))
        return list(candidates) if self.keep else []


def test_candidates_reach_the_policy_best_score_first() -> None:
    policy = _RecordingPolicy()

    def f(x, y):
        a, b = x * 2, y * 3  # each has two users: both are realized, in two groups
        # ``c`` reads the big ``a`` (64x64) from one group and the small ``b`` (64x1) from
        # the other: the group of ``a`` saves more bytes and comes first.
        return a + b, a.exp(), b.exp()

    _schedule(f, (64, 64), (64, 1), policy=policy)
    multi = [c for c in policy.seen if len(c) > 1]
    assert multi, "expected a node with more than one candidate group"
    for candidates in multi:
        scores = [c.score for c in candidates]
        assert scores == sorted(scores, reverse=True)
    assert any(len({c.score for c in candidates}) > 1 for candidates in multi)


def test_a_policy_that_keeps_nothing_vetoes_every_fusion_with_its_name() -> None:
    policy = _RecordingPolicy(keep=False)
    _, schedule = _schedule(_two_nodes, (4, 4), policy=policy)
    assert len(_kernels(schedule)) == 2
    assert all("vetoed by scheduling policy 'recorder'" in r.reason for r in schedule.refusals)


# -- memory plan ---------------------------------------------------------------------


def test_a_value_read_by_an_extern_is_stored_and_its_last_use_is_that_step() -> None:
    def f(x):
        y = x * 2
        # cumsum has no lowering here: an extern step reads ``y`` from memory.
        return torch.ops.aten.cumsum.default(y, 0) + 1

    graph, schedule = _schedule(f, (16,))
    extern_index = next(i for i, s in enumerate(schedule.steps) if isinstance(s, ExternStep))
    (read,) = schedule.steps[extern_index].node.read_names
    producer = next(k for k in _kernels(schedule) if read in k.names)
    assert read in producer.stores
    assert schedule.last_use[read] == extern_index


def test_a_dead_value_is_removed_and_never_computed() -> None:
    def f(x):
        y = x.exp()  # two users, so lowering realizes it; neither user reaches an output
        _unused = y.sin() + y.cos()
        return x * 2

    graph, schedule = _schedule(f, (8,))
    assert any("exp" in b.origins[0] for b in graph.buffers), "the dead exp was lowered"
    (kernel,) = _kernels(schedule)
    (dead,) = schedule.removed
    assert dead not in kernel.names
    assert "exp" in next(b for b in graph.buffers if b.name == dead).origins[0]
