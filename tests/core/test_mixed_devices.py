"""Nodes whose tensors span devices, or sit on a device no backend serves, run eagerly.

The graphs are traced with fake tensors, so CUDA tensors exist without a GPU: lowering
is checked here; running such graphs is checked on the GPU by the OpInfo sweep
(``index_put``/``narrow``/``tensor_split`` samples with CPU index tensors).
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from tilefuse.frontend import lowerings  # noqa: F401  (registers every lowering)
from tilefuse.frontend.lowering import GraphLowering


def _lower(fn, *make_inputs):
    mode = FakeTensorMode()
    with mode:
        inputs = [make() for make in make_inputs]
        gm = make_fx(fn)(*inputs)
        return GraphLowering(gm, inputs).run()


def _kinds(graph) -> list[tuple[str, str]]:
    return [(b.kind(), str(b.device)) for b in graph.buffers]


def test_cpu_index_into_cuda_data_is_an_extern_and_the_rest_still_compiles() -> None:
    def f(x, idx, v):
        return torch.index_put(x, (idx,), v, accumulate=True) * 2

    graph = _lower(
        f,
        lambda: torch.empty(5, 5, device="cuda"),
        lambda: torch.tensor([1, 3]),
        lambda: torch.empty(2, 5, device="cuda"),
    )
    assert "several devices (cpu, cuda:0)" in graph.externs["index_put.default"]
    assert _kinds(graph) == [("extern", "cuda:0"), ("pointwise", "cuda:0")]


def test_one_device_graphs_are_unchanged() -> None:
    graph = _lower(lambda x, s: (x * s).sum(), lambda: torch.empty(4), lambda: torch.tensor(2.0))
    assert graph.externs == {}
    assert all(kind != "extern" for kind, _ in _kinds(graph))


def _serve(monkeypatch, *device_types: str) -> None:
    monkeypatch.setattr(
        "tilefuse.backend_selection.served_device_types", lambda: frozenset(device_types)
    )


def test_a_node_on_an_unserved_device_runs_eagerly_when_another_is_served(
    monkeypatch, caplog
) -> None:
    _serve(monkeypatch, "cpu")
    monkeypatch.setattr("tilefuse.frontend.lowering._warned_unserved", set())

    def f(x, y):
        return x * 2, y + 1

    graph = _lower(f, lambda: torch.empty(4), lambda: torch.empty(4, device="cuda"))
    assert "no backend serves cuda" in graph.externs["add.Tensor"]
    assert sorted(_kinds(graph)) == [("extern", "cuda:0"), ("pointwise", "cpu")]
    warnings = [r for r in caplog.records if "no backend serves cuda" in r.getMessage()]
    assert len(warnings) == 1


def test_a_side_graph_on_an_unserved_device_compiles_as_externs(monkeypatch) -> None:
    """A CUDA program's CPU side graph (index preprocessing split off by a graph break)
    runs its ops eagerly rather than failing the compile."""
    _serve(monkeypatch, "cuda")
    graph = _lower(lambda i: (i + 1).long(), lambda: torch.empty(4, dtype=torch.int32))
    assert set(graph.externs) == {"add.Tensor", "_to_copy.default"}
    assert all(kind == "extern" for kind, _ in _kinds(graph))


def test_a_graph_when_no_backend_serves_anything_is_left_for_the_no_backend_error(
    monkeypatch,
) -> None:
    _serve(monkeypatch)
    graph = _lower(lambda y: y + 1, lambda: torch.empty(4, device="cuda"))
    assert graph.externs == {}


def test_a_zero_dim_cpu_tensor_is_not_loaded_by_a_cuda_kernel() -> None:
    graph = _lower(
        lambda x, s: x * s, lambda: torch.empty(4, device="cuda"), lambda: torch.tensor(2.0)
    )
    assert "several devices" in graph.externs["mul.Tensor"]
