"""Graphs with symbolic sizes compile once for every size (``graphs_compiled_symbolic``)
and match eager at every size; where they cannot, they are specialized per shape as
before, and the report says why."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tilefuse
from tests.compile_check import assert_same, check_forward_backward_over_lengths
from tilefuse.errors import SymbolicUnsupported
from tilefuse.report import collect_reports

aten = torch.ops.aten


def _fresh() -> None:
    torch._dynamo.reset()
    tilefuse.reset()


def _marked(inputs: Sequence[torch.Tensor], dims: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    for t, ds in zip(inputs, dims):
        for d in ds:
            torch._dynamo.mark_dynamic(t, d)
    return list(inputs)


def _over_sizes(
    fn: Callable[..., Any],
    make: Callable[[int], Sequence[torch.Tensor]],
    sizes: Sequence[int],
    dims: Sequence[Sequence[int]],
    **compile_kwargs: Any,
) -> list[Any]:
    """Call ``fn`` compiled on ``make(n)`` for each ``n`` (``dims`` of each input marked
    dynamic) and compare with eager; returns the compile reports."""
    _fresh()
    compiled = torch.compile(fn, backend="tilefuse", **compile_kwargs)
    with collect_reports() as reports:
        for n in sizes:
            inputs = make(n)
            expected = fn(*inputs)
            actual = compiled(*_marked(inputs, dims))
            try:
                assert_same(actual, expected)
            except AssertionError as exc:
                raise AssertionError(f"size {n}: differs from eager: {exc}") from exc
    return reports


def _assert_symbolic(graphs: int, externs: int = 0, templates: int = 0) -> None:
    """Exactly ``graphs`` graphs compiled, each once for every size; none specialized;
    ``externs`` eager calls and ``templates`` GEMM templates inside them."""
    stats = tilefuse.stats()
    assert stats["externs"] == externs, stats
    assert stats["templates"] == templates, stats
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["graphs_compiled"] == graphs, stats
    assert stats["graphs_compiled_symbolic"] == graphs, stats
    assert stats["specializations_compiled"] == 0, stats
    assert stats["symbolic_fallbacks"] == 0, stats


SIZES = [2, 3, 5, 8, 13, 17, 31, 64, 100, 257]


def test_pointwise_over_many_sizes():
    def fn(x, y):
        h = torch.sigmoid(x) * y + x.to(torch.float16).float()
        return F.gelu(h * 2 + 1), torch.where(x > 0, x, y) / (y.abs() + 1)

    reports = _over_sizes(fn, lambda n: (torch.randn(n, 7), torch.randn(n, 1)), SIZES, [[0], [0]])
    _assert_symbolic(1)
    assert "compiled once for every value" in reports[0].specialization
    # The sizes are kernel arguments: one source serves every size.
    for kernel in reports[0].kernels:
        header = next(line for line in kernel.source.splitlines() if line.startswith("def "))
        assert "xnumel, rnumel, s" in header, header


@pytest.mark.parametrize(
    "symbolic_dim, sizes",
    [
        (0, [4, 2, 3, 9, 33, 70]),  # rows symbolic, row length 40 (persistent)
        (1, [300, 2, 3, 17, 511, 513, 1000, 8193]),  # row length symbolic (looped)
        (1, [5, 16, 17, 40, 1000]),  # a small first size: many loop steps later
    ],
    ids=["rows", "row-length", "row-length-small-hint"],
)
def test_reductions_over_many_sizes(symbolic_dim, sizes):
    def fn(x):
        return (
            x.sum(-1),
            x.amax(-1),
            x.argmax(-1),
            torch.softmax(x, -1),
            x.var(-1),
            x.mean(0),
            torch.log_softmax(x * 2, -1),
            # per-row reads at a size-dependent offset, and a size as a value
            x.sum(-1) * x[:, -1],
            torch.softmax(x, -1) * x[:, -1:] / x.shape[-1],
        )

    def make(n):
        return (torch.randn(n, 40) if symbolic_dim == 0 else torch.randn(3, n),)

    _over_sizes(fn, make, sizes, [[symbolic_dim]])
    _assert_symbolic(1)


def test_views_and_slices_over_many_sizes():
    def fn(x):
        a = x.reshape(-1, 2).t() * 2
        b = x.unsqueeze(0).expand(3, -1, -1).permute(2, 1, 0) + 1
        c = x[1:, 2:5] - x[:-1, :3]
        d = torch.cat([x, x[:, :1]], 1).flip(0)
        e = x.reshape(x.shape[0] * 3, 2).sum(1) + torch.arange(x.shape[0] * 3)
        f = x[::2] * 3
        return a, b, c, d, e, f, x.transpose(0, 1).contiguous()

    # From 3: at 2, x[1:] would have a size-1 dim, which Dynamo specializes.
    _over_sizes(fn, lambda n: (torch.randn(n, 6),), [3, 4, *SIZES[2:]], [[0]])
    _assert_symbolic(1)


def test_roll_by_a_symbolic_shift():
    """An int argument under ``dynamic=True`` is a symbol, and so is a roll's shift made
    from it (it printed as sympy's ``Mod`` into the kernel: a NameError, and the graph
    was specialized per shape or failed); such a roll is now one symbolic extern."""

    def fn(x, shift):
        return x.roll(shift, 1) * 2

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse", dynamic=True)
    for shift in (4, 7, -2):
        x = torch.randn(4, 3)
        torch._dynamo.mark_static(x)  # static sizes, a symbolic shift
        assert_same(compiled(x, shift), fn(x, shift))
    _assert_symbolic(1, externs=1)


def test_chunks_of_symbolic_sizes_compile_once():
    """``chunk`` of a symbolic length (pieces of ``(n + 1) // 2``: the split lowering
    iterated a sympy expression) compiled per shape; now once."""

    def fn(x):
        a, b = x.chunk(2, 0)
        return F.pad(a, (2, 1)) * 2, b.sum(0) + 1

    _over_sizes(fn, lambda n: (torch.randn(n, 5),), [4, 7, 9, 12], [[0]])
    _assert_symbolic(1)


def test_a_pad_by_an_int_argument_matches_eager():
    """Padding by an int argument (a symbol of unknown sign under ``dynamic=True``: its
    ``< 0`` check raised) runs as an extern, compiled once; its result's strides hold
    ``max(1, ...)`` of that symbol, which as a stride is the product it bounds."""

    def fn(x, before):
        return F.pad(x, (before, 1)) * 2

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse", dynamic=True)
    for n, before in [(4, 2), (7, 3), (9, 2)]:
        x = torch.randn(n, 5)
        assert_same(compiled(x, before), fn(x, before))
    _assert_symbolic(1, externs=1)


def test_an_int_argument_is_no_size_in_max():
    """Under ``dynamic=True`` an int argument is a symbol of any sign: ``max(n, 1)`` as a
    slice step is not ``n`` (taken as a size, at least 2, it was, and n = -2 then asked
    for a tensor of a negative size)."""

    def fn(x, n):
        return x[:: max(n, 1)] * 2

    _fresh()
    compiled = torch.compile(fn, backend="tilefuse", dynamic=True)
    for n in (3, 5, -2, 2):
        x = torch.randn(8, 4)
        assert_same(compiled(x, n), fn(x, n))


class MLP(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(self.ln(x)))  # bias + gelu: the GEMM's epilogue
        return x + torch.relu(self.fc2(h)) * 0.5


def _train_over_sizes(model: nn.Module, sizes: Sequence[int], **compile_kwargs: Any) -> None:
    comp = copy.deepcopy(model)
    compiled = torch.compile(comp, backend="tilefuse", **compile_kwargs)
    for n in sizes:
        x = torch.randn(n, 16)
        xe = x.clone().requires_grad_()
        xc = x.clone().requires_grad_()
        if not compile_kwargs:
            torch._dynamo.mark_dynamic(xc, 0)
        expected = model(xe)
        actual = compiled(xc)
        assert_same(actual, expected)
        seed = torch.randn_like(expected)
        model.zero_grad()
        comp.zero_grad()
        (expected * seed).sum().backward()
        (actual * seed).sum().backward()
        assert_same(xc.grad, xe.grad)
        for (name, pc), (_, pe) in zip(comp.named_parameters(), model.named_parameters()):
            assert pc.grad is not None, f"no gradient for {name} at size {n}"
            assert_same(pc.grad, pe.grad)


def test_mlp_forward_and_backward_over_many_sizes():
    _fresh()
    _train_over_sizes(MLP(), SIZES)
    # Forward and backward graph, once each; the six GEMMs (two forward, four backward)
    # are templates whose kernel is picked per size bucket when a call reaches it.
    _assert_symbolic(2, templates=6)
    assert tilefuse.stats()["gemm_bucket_selections"] > 0


@pytest.mark.parametrize("dynamic", [True, None], ids=["dynamic=True", "automatic"])
def test_at_most_two_compiles_per_graph_over_twelve_batch_sizes(dynamic):
    """Automatic dynamic shapes compile the first shape statically, then once more with
    symbolic sizes; ``dynamic=True`` compiles once."""
    _fresh()
    _train_over_sizes(MLP(), [4, 6, 2, 9, 12, 3, 17, 5, 33, 8, 21, 7], dynamic=dynamic)
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["specializations_compiled"] == 0, stats
    assert stats["graphs_compiled"] <= 4, stats  # forward and backward, at most twice each
    assert stats["graphs_compiled_symbolic"] == 2, stats


def test_one_kernel_source_for_every_size_hint():
    """Kernels do not bake the sizes in: compiles whose first sizes differ (same block
    choice) produce identical sources, so they share one kernel cache entry."""

    def fn(x):
        return torch.relu(x * 2).sum(-1) + x.mean(-1)

    sources = []
    for first in (37, 45):
        reports = _over_sizes(fn, lambda n: (torch.randn(n, 5),), [first], [[0]])
        sources.append([k.source for r in reports for k in r.kernels])
        assert str(first) not in "".join(sources[-1])
    assert sources[0] == sources[1]


def test_turned_off_specializes_per_shape():
    def fn(x):
        return x.sin() * 2

    reports = _over_sizes(
        fn, lambda n: (torch.randn(n, 3),), [2, 3, 4], [[0]], options={"dynamic_sizes": False}
    )
    stats = tilefuse.stats()
    assert stats["graphs_compiled_symbolic"] == 0, stats
    assert stats["specializations_compiled"] == 3, stats
    assert "turned off" in reports[0].specialization


def test_a_step_that_cannot_handle_a_symbol_specializes_with_the_reason(monkeypatch):
    from tilefuse.frontend.lowering import LOWERINGS

    original = LOWERINGS[aten.permute]

    def permute(ctx, node, x, dims):
        if any(not s.is_Integer for s in x.size):
            raise SymbolicUnsupported("test: permute of a symbolic size")
        return original(ctx, node, x, dims)

    monkeypatch.setitem(LOWERINGS, aten.permute, permute)

    def fn(x):
        return x.permute(1, 0) * 2 + 1

    reports = _over_sizes(fn, lambda n: (torch.randn(n, 3),), [2, 5, 7], [[0]])
    stats = tilefuse.stats()
    assert stats["symbolic_fallbacks"] == 1, stats
    assert stats["graphs_compiled_symbolic"] == 0, stats
    assert stats["specializations_compiled"] == 3, stats
    assert stats["graphs_fallen_back"] == 0, stats
    assert "test: permute of a symbolic size" in reports[0].specialization


def test_backward_graph_specializes_on_its_own():
    """``_GraphSpecializer``: an AOTAutograd graph compiled per concrete signature."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tilefuse.dynamo_backend import _GraphSpecializer

    def graph(x, y):
        return (torch.tanh(x) * y, x.sum(0))

    _fresh()
    gm = make_fx(graph)(torch.randn(3, 4), torch.randn(3, 4))
    specializer = _GraphSpecializer(gm, {}, "test reason")
    for n in (3, 5, 3):
        x, y = torch.randn(n, 4), torch.randn(n, 4)
        assert_same(specializer([x, y]), graph(x, y))
    stats = tilefuse.stats()
    assert stats["specializations_compiled"] == 2, stats  # the shape (3, 4) is reused
    assert stats["symbolic_fallbacks"] == 1, stats
    assert stats["graphs_fallen_back"] == 0, stats


def test_wrapper_binds_sizes_per_call_and_checks_the_other_inputs():
    """A graph compiled once (without Dynamo: its guards are not there to help) runs at
    new sizes, and refuses inputs whose sizes disagree with its symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tilefuse.errors import CompileError
    from tilefuse.pipeline import compile_graph

    def graph(x, y):
        return (torch.softmax(x + y, -1) * x.shape[0], (x * y).reshape(-1).sum())

    _fresh()
    gm = make_fx(graph, tracing_mode="symbolic")(torch.randn(4, 3), torch.randn(4, 3))
    fakes = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    compiled = compile_graph(gm, fakes)
    assert compiled.report.specialization.startswith("none: compiled once"), compiled.report
    for rows, cols in [(4, 3), (9, 5), (2, 17)]:
        x, y = torch.randn(rows, cols), torch.randn(rows, cols)
        assert_same(compiled([x, y]), graph(x, y))
    with pytest.raises(CompileError, match="not have the shapes this graph was compiled for"):
        compiled([torch.randn(5, 3), torch.randn(6, 3)])


def test_transformer_block_forward_backward_over_sequence_lengths():
    from tests.e2e.test_models import Block

    check_forward_backward_over_lengths(Block(causal=True), [8, 5, 12, 3, 9])
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["graphs_compiled"] == stats["graphs_compiled_symbolic"] == 2, stats


def test_masked_softmax_of_a_bmm_normalizes_in_its_reduction_kernel():
    """Attention scores from a bmm, scaled, causally masked and softmaxed over a symbolic
    length: the normalizing pass reads the row statistics at ``(r + s*x) // s``, which is
    the row ``x`` because ``r < s``; it used to be refused as another element and ran as
    a kernel of its own (the block of ``bench/dynamic.py``: 89 us of 456 on the H200)."""
    mask = torch.ones(64, 64, dtype=torch.bool).triu(1)

    def fn(q, k):
        s = q.shape[2]
        scores = (q @ k.transpose(-2, -1)) * 0.25  # (batch, heads, s, s) through a bmm
        return torch.softmax(scores.masked_fill(mask[:s, :s], float("-inf")), dim=-1)

    def make(n):
        return torch.randn(2, 3, n, 8), torch.randn(2, 3, n, 8)

    reports = _over_sizes(fn, make, [5, 9, 17, 33], [[2], [2]])
    _assert_symbolic(1, templates=1)
    (report,) = reports
    kinds = [k.kind for k in report.kernels if not k.kind.startswith("template")]
    assert kinds == ["reduction"], report.format()


def test_a_gemm_of_symbolic_sizes_takes_its_epilogue_and_picks_per_size_bucket():
    """A linear layer's bias, relu and scale, read through the (batch, n, out) view of the
    (batch*n, out) product, is the GEMM's epilogue for every n (the index of the view
    only simplifies to the GEMM's own with ``24*x + r`` over ``24*s`` peeled). The kernel
    is picked once per bucket of n (a power of two): n = 3, 7, 12 open buckets 4, 8
    and 16; n = 5 and 13 reuse two of them."""
    lin = nn.Linear(16, 24)

    def fn(x):
        return torch.relu(lin(x)) * 0.5

    with torch.no_grad():
        reports = _over_sizes(fn, lambda n: (torch.randn(2, n, 16),), [3, 7, 12, 5, 13],
                              [[1]])  # fmt: skip
    _assert_symbolic(1, templates=1)
    (report,) = reports
    (template,) = [k for k in report.kernels if k.kind == "template:mm"]
    assert len(template.nodes) == 2, report.format()  # the product and its epilogue
    assert not [r for r in report.refusals if r.startswith("epilogue")], report.format()
    assert tilefuse.stats()["gemm_bucket_selections"] == 3, tilefuse.stats()


def test_a_gemm_over_a_slice_that_shrinks_as_the_size_grows_matches_eager():
    """``X[s:] @ w`` with a residual ``X3[s:] @ w2``: M is ``65 - s``, smaller at the
    bucket's rounded-up ``s`` (one row at s = 64, where a residual of many rows looked
    like one broadcast row: wrong sums). Such a GEMM is picked per exact size."""
    torch.manual_seed(0)
    w, x_all, x3, w2 = (
        torch.randn(16, 24),
        torch.randn(65, 16),
        torch.randn(65, 8),
        torch.randn(8, 24),
    )

    def fn(y):
        s = y.shape[0]
        return x_all[s:] @ w + (x3[s:] @ w2)

    reports = _over_sizes(fn, lambda n: (torch.randn(n),), [33, 40, 50], [[0]])
    _assert_symbolic(1, externs=2, templates=2)  # the slices of a symbolic start: externs
    assert tilefuse.stats()["gemm_bucket_selections"] >= 3, reports[0].format()


def test_indexing_over_many_sizes():
    def fn(table, ids, x):
        picked = F.embedding(ids, table)  # (n, 4)
        gathered = torch.gather(x, 1, ids[:, None].expand(-1, 3) % 3)
        return picked * 2, gathered + 1, x[ids % x.shape[0]], x.index_select(0, ids % 2)

    def make(n):
        return torch.randn(10, 4), torch.randint(0, 10, (n,)), torch.randn(n, 3)

    _over_sizes(fn, make, SIZES, [[], [0], [0]])
    _assert_symbolic(1)


def test_cpp_wrapper_option_keeps_the_python_wrapper_for_symbolic_sizes():
    def fn(x):
        return torch.cos(x) + 1

    _over_sizes(fn, lambda n: (torch.randn(n, 4),), [3, 6], [[0]], options={"cpp_wrapper": True})
    _assert_symbolic(1)
    assert tilefuse.stats()["cpp_wrapper_fallbacks"] == 1


def test_a_backward_that_cannot_be_symbolic_is_specialized_alone(monkeypatch):
    """The forward compiles once for every size; the backward (compiled later, when its
    forward already runs) is specialized per shape on its own."""
    import tilefuse.pipeline

    original = tilefuse.pipeline.compile_graph

    def compile_graph(gm, example_inputs, *rest):
        backward = any(n.name.startswith("tangents") for n in gm.graph.nodes)
        symbolic = any(isinstance(s, torch.SymInt) for x in example_inputs
                       for s in (x.shape if isinstance(x, torch.Tensor) else (x,)))  # fmt: skip
        if backward and symbolic:
            raise SymbolicUnsupported("test: a backward graph that cannot be symbolic")
        return original(gm, example_inputs, *rest)

    monkeypatch.setattr(tilefuse.pipeline, "compile_graph", compile_graph)
    _fresh()
    _train_over_sizes(MLP(), [3, 5, 3, 8])
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, stats
    assert stats["graphs_compiled_symbolic"] == 1, stats  # the forward
    assert stats["symbolic_fallbacks"] == 1, stats  # the backward
    assert stats["specializations_compiled"] == 3, stats  # sizes 3, 5 and 8


def test_a_symbolic_graph_failing_on_its_first_call_is_specialized(monkeypatch):
    """Outside strict mode, a graph compiled for every size whose first call fails is
    specialized per shape from then on (not run eagerly)."""
    from tilefuse_triton.scheduling import TritonKernel

    original = TritonKernel.__call__

    def call(self, *args):
        if self.size_args:
            raise RuntimeError("test: a symbolic kernel that fails at run time")
        return original(self, *args)

    monkeypatch.setattr(TritonKernel, "__call__", call)
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)

    def fn(x):
        return torch.exp(x) * 3

    _over_sizes(fn, lambda n: (torch.randn(n, 5),), [4, 6, 4], [[0]])
    stats = tilefuse.stats()
    assert stats["graphs_compiled_symbolic"] == 1, stats
    assert stats["symbolic_fallbacks"] == 1, stats
    assert stats["specializations_compiled"] == 2, stats  # sizes 4 and 6
    assert stats["graphs_fallen_back"] == 0, stats


def test_program_offsets_are_widened_before_they_are_scaled():
    """A symbolic extent may pass 2**31 elements: the program id is made 64-bit before it is
    multiplied by the block size (``pid * XBLOCK`` in int32 wraps first; the H200 run of
    ``test_gpu_symbolic`` hit an illegal address that way)."""

    def fn(x):
        return x * 2 + 1, torch.relu(x).sum(-1)

    reports = _over_sizes(fn, lambda n: (torch.randn(n, 6),), [4, 9], [[0]])
    sources = [k.source for r in reports for k in r.kernels]
    assert sources and all("tl.program_id(0).to(tl.int64)" in s for s in sources), sources
    assert not any("tl.program_id(0) * XBLOCK" in s for s in sources)
