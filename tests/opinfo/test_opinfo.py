"""PyTorch's OpInfo database (``op_db``) compiled by tilefuse and compared with eager.

``test_opinfo_cpu`` is the CI subset: one small sample per op at float32 (forward and
backward) and at one other dtype, run through the Triton interpreter on CPU tensors.
``test_opinfo_gpu`` (``-m gpu``) is the whole sweep: every sample, every dtype, on CUDA
(``TILEFUSE_OPINFO_SAMPLES=START:STOP`` keeps the samples numbered START to STOP - 1 of
each op and dtype, for a shorter run; ``TILEFUSE_OPINFO_SHARD=I/N`` keeps every Nth case
from the Ith, to split the sweep over GPUs or runs).
Both compile in strict mode: a graph either compiles (ops without a lowering become
explicit externs inside it) or the case fails. Cases that eager comparison cannot judge
are listed, with their reason, in ``known.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from filelock import FileLock

pytest.importorskip("expecttest", reason="torch.testing._internal (op_db) imports expecttest")

from . import cases, known, runner  # noqa: E402


def _param(case: cases.Case):
    reason = known.skip_reason(case.name)
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    limit = known.torch_limit(case.id)
    if limit:
        marks.append(pytest.mark.xfail(reason=limit, strict=True))
    return pytest.param(case, id=case.id, marks=marks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cpu_case" in metafunc.fixturenames:
        metafunc.parametrize("cpu_case", [_param(c) for c in cases.cpu_cases()])
    if "view_case" in metafunc.fixturenames:
        metafunc.parametrize("view_case", [_param(c) for c in cases.view_cases()])
    if "gpu_case" in metafunc.fixturenames:
        # Enumerating every sample takes minutes: only where the sweep can run.
        if torch.cuda.is_available():
            params = [_param(c) for c in _gpu_cases()]
        else:
            params = [pytest.param(None, id="all")]
        metafunc.parametrize("gpu_case", params)


def _gpu_cases() -> list[cases.Case]:
    """The GPU sweep's cases for this run's sample range and shard. Enumerating them takes
    minutes, so the first pytest process (xdist worker) to get here writes the list to a
    file that the others read."""
    start, _, stop = os.environ.get("TILEFUSE_OPINFO_SAMPLES", "").partition(":")
    shard, _, shards = os.environ.get("TILEFUSE_OPINFO_SHARD", "0/1").partition("/")
    name = f"tilefuse-opinfo-cases-{torch.__version__}-{start}-{stop}.json"
    path = Path(tempfile.gettempdir()) / name
    with FileLock(f"{path}.lock"):
        if not path.exists():
            found = cases.all_cases("cuda", int(start or 0), int(stop) if stop else None)
            rows = [[c.name, str(c.dtype).removeprefix("torch."), c.index] for c in found]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rows))
            tmp.replace(path)
        rows = json.loads(path.read_text())
    every = [cases.Case(n, getattr(torch, d), i) for n, d, i in rows]
    return every[int(shard) :: int(shards or 1)]


def test_opinfo_cpu(cpu_case: cases.Case) -> None:
    runner.run_case(cpu_case, "cpu")


def test_opinfo_cpu_views_consumed(view_case: cases.Case) -> None:
    """Each sample of a view op, its outputs copied in the graph: a kernel then reads
    through the view's strides and storage offset (a ``diagonal(offset=1)`` read the
    wrong elements while the bare view output, returned as is, looked right)."""
    runner.run_case(view_case, "cpu", consume=True)


@pytest.mark.gpu
def test_opinfo_gpu(gpu_case: cases.Case) -> None:
    runner.run_case(gpu_case, "cuda")


def test_named_ops_exist() -> None:
    """Every named op of the sweep is in this torch's op_db (a rename would drop it)."""
    assert cases.missing_named() == []


def test_known_entries_name_swept_ops() -> None:
    """Every known entry names an op the sweep runs, and says why."""
    swept = {cases.full_name(op) for op in cases.selected_ops()}
    for name, reason in known.SKIP.items():
        assert name in swept, f"known.SKIP names {name!r}, which the sweep does not run"
        assert reason.strip(), f"known.SKIP[{name!r}] has no reason"
    for name, reason in known.NO_GRAPH.items():
        assert name in swept, f"known.NO_GRAPH names {name!r}, which the sweep does not run"
        assert reason.strip(), f"known.NO_GRAPH[{name!r}] has no reason"
    for (name, _dtype), entry in known.TOLERANCE.items():
        assert name in swept, f"known.TOLERANCE names {name!r}, which the sweep does not run"
        assert entry[2].strip(), f"known.TOLERANCE[{name!r}] has no reason"
    for case_id, (_version, reason) in known.TORCH_LIMIT.items():
        name = case_id.rsplit("-", 2)[0]
        assert name in swept, f"known.TORCH_LIMIT names {case_id!r}, which the sweep does not run"
        assert reason.strip(), f"known.TORCH_LIMIT[{case_id!r}] has no reason"


def test_runner_catches_a_wrong_lowering(monkeypatch) -> None:
    """The sweep can fail: a lowering that computes the wrong thing is caught."""
    from tilefuse.frontend import lowering
    from tilefuse.frontend.lowerings import pointwise

    aten = torch.ops.aten
    monkeypatch.setitem(lowering.LOWERINGS, aten.abs, pointwise._unary("neg"))
    with pytest.raises(AssertionError, match="abs-float32-0"):
        runner.run_case(cases.Case("abs", torch.float32, 0), "cpu")


def test_runner_catches_a_wrong_in_place_update(monkeypatch) -> None:
    """Inputs are compared after the call: batch norm's running statistics are results."""
    from torch._decomp import decomposition_table as torch_decompositions

    aten = torch.ops.aten
    real = torch_decompositions[aten._native_batch_norm_legit_functional.default]

    def stale_stats(x, weight, bias, running_mean, running_var, training, momentum, eps):
        out = real(x, weight, bias, running_mean, running_var, training, momentum, eps)
        return (*out[:3], running_mean, running_var)

    from tilefuse.frontend import decompositions

    table = dict(decompositions.decomposition_table())
    table[aten._native_batch_norm_legit_functional.default] = stale_stats
    monkeypatch.setattr(decompositions, "decomposition_table", lambda: table)
    monkeypatch.setattr("tilefuse.dynamo_backend.decomposition_table", lambda: table)
    with pytest.raises(AssertionError, match="nn.functional.batch_norm-float32-0"):
        runner.run_case(cases.Case("nn.functional.batch_norm", torch.float32, 0), "cpu")


def test_runner_catches_a_graph_that_tilefuse_alone_loses(monkeypatch) -> None:
    """A sample that torch's aot_eager compiles but tilefuse does not fails the case:
    torch's own take decomposition reads a 0-d index with .item(), which fake tensors
    cannot trace (Dynamo then runs the op eagerly)."""
    from torch._decomp import decomposition_table as torch_decompositions

    from tilefuse.frontend import decompositions

    aten = torch.ops.aten
    table = dict(decompositions.decomposition_table())
    table[aten.take.default] = torch_decompositions[aten.take.default]
    monkeypatch.setattr("tilefuse.dynamo_backend.decomposition_table", lambda: table)
    with pytest.raises(AssertionError, match="take-float32-2: tilefuse compiled no graph"):
        runner.run_case(cases.Case("take", torch.float32, 2), "cpu")


def test_runner_names_samples_no_aot_backend_can_trace() -> None:
    """index_fill with a tensor value that needs grad: its backward calls _unique, whose
    output shape depends on data, so Dynamo runs it eagerly for every AOTAutograd
    backend. The case passes, with a warning saying that nothing was compiled."""
    with pytest.warns(UserWarning, match="index_fill-float32-1: AOTAutograd cannot trace"):
        runner.run_case(cases.Case("index_fill", torch.float32, 1), "cpu")


def test_half_results_may_match_the_aten_graph_run_eagerly() -> None:
    """The third half-precision reference is the decomposed graph, each step rounded:
    accepted when tilefuse computes exactly that, refused when it computes neither."""

    def call(x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=g).half()
    y = torch.rand(64, generator=g).half()
    pristine = ((x, y), {})
    graph_out = runner._aten_graph_eagerly(lambda *a: call(*a), (x.clone(), y.clone()))
    expected = runner._results(call(x, y), [x, y], {})
    as_graph = runner._results(graph_out, [x, y], {})
    runner._compare_half_references(call, lambda *a: call(*a), pristine, as_graph, expected,
                                    None, "bce")  # fmt: skip
    wrong = runner._results(graph_out + 0.01, [x, y], {})
    with pytest.raises(AssertionError, match="float32 reference"):
        runner._compare_half_references(call, lambda *a: call(*a), pristine, wrong, expected,
                                        None, "bce")  # fmt: skip


def test_half_results_may_be_as_far_from_float32_as_eager_is() -> None:
    """Where eager's step-by-step rounding misses the float32 answer, a result that matches
    neither it nor the aten graph passes when it is no further from the float32 answer than
    twice eager's own distance, and fails when it is further."""

    def call(a, b):
        return a * b + a  # eager rounds a * b to bfloat16 before the add

    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, generator=g).bfloat16()
    b = torch.randn(256, generator=g).bfloat16()
    pristine = ((a, b), {})
    expected = runner._results(call(a, b), [a, b], {})
    reference = runner._in_float(call, (a, b), {}, like=expected)[0].double()
    eager = expected[0].double()
    assert bool((eager != reference).any()), "the sample must have elements eager misses"

    def judged(result: torch.Tensor) -> None:
        got = runner._results(result.bfloat16(), [a, b], {})
        runner._compare_half_references(call, lambda *x: call(*x), pristine, got, expected,
                                        (0.0, 0.0), "a*b+a")  # fmt: skip

    mirrored = 2 * reference - eager  # as far from the answer as eager, on the other side
    assert bool((mirrored.bfloat16().double() == mirrored).all())
    judged(mirrored)
    with pytest.raises(AssertionError, match="float32 reference"):
        judged(4 * reference - 3 * eager)  # three times eager's distance


def test_integer_division_by_zero_is_left_out_on_cuda_only() -> None:
    case = cases.Case("__rmod__", torch.int64, 0)
    divisor = torch.tensor([0, 2, 3])
    pristine = ((divisor, torch.tensor([5, 5, 5])), {})
    actual = (torch.tensor([-1, 1, 2]), [])
    expected = (torch.tensor([2**32 - 1, 1, 2]), [])
    got, want = known.mask_undefined(case, "cuda", pristine, actual, expected)
    assert got[0].tolist() == want[0].tolist() == [0, 1, 2]
    got, want = known.mask_undefined(case, "cpu", pristine, actual, expected)
    assert got[0].tolist() != want[0].tolist()


def test_float32_results_are_judged_against_float64_eager() -> None:
    """Within the tolerance of eager in float64, or within twice eager's own error of it,
    passes; further than both fails, naming the worst element."""
    reference = torch.tensor([1.0, 0.0, -2.0])
    expected = torch.tensor([1.0 + 4e-6, 6e-5, -2.0])  # eager's own error: 4e-6 and 6e-5
    summed_otherwise = torch.tensor([1.0 - 4e-6, -1e-4, -2.0 + 2e-6])
    runner.near_reference(summed_otherwise, expected, reference, None, "noise")
    with pytest.raises(AssertionError, match=r"1 of 3 elements .* index \(1,\)"):
        runner.near_reference(torch.tensor([1.0, 2e-4, -2.0]), expected, reference, None, "bug")
    with pytest.raises(AssertionError, match="index"):
        runner.near_reference(torch.tensor([1.0, 0.0, -2.0]), expected,
                              torch.tensor([1.0, 0.0, float("nan")]), None, "nan")  # fmt: skip


def test_float32_gradients_eager_gets_wrong_are_judged_in_float64() -> None:
    """A one-element layer norm's input gradient is exactly 0 (the output is the bias):
    CPU eager's kernel gives about 1e-4, tilefuse 0, and eager in float64 about 0."""
    runner.run_case(cases.Case("nn.functional.layer_norm", torch.float32, 2), "cpu")
