"""Run one sweep case: compile the op with tilefuse, compare against eager.

``run_case`` compiles ``lambda *args: op(*args, **kwargs)`` for one OpInfo sample with
``torch.compile(backend="tilefuse")`` in strict mode (a graph that cannot compile raises
instead of running eagerly; an op without a lowering is an explicit extern inside the
graph), then compares with ``torch.testing.assert_close`` at the dtype's tolerance:

- every output, and every input tensor afterwards (in-place updates such as batch norm's
  running statistics are results too);
- for float32 samples that require grad, the gradients of every input that needs one.

Half-precision results are compared as PyTorch's own compiler tests compare them: against
eager at the same dtype, or, where eager rounds intermediate results that a fused kernel
keeps in float32, against eager run in float32 and rounded once at the end
(``_in_float``).

Float32 results that differ from eager are compared with eager run in float64 and rounded
once to float32 (``_in_float64``), the float32 analogue of the half-precision rule: they pass
when every element is within the dtype's tolerance of that reference, or no further from it
than ``EAGER_ERROR_FACTOR`` times eager's own error there (``near_reference``). Summing in
another order (a reduction split over blocks) moves a result by rounding noise of eager's
own size, which can exceed a float32 tolerance measured from eager; a wrong result is
further from the reference than eager is.

A case must compile at least one graph, unless its op's outputs are all views of its
inputs (Dynamo answers those itself), the op is in ``known.NO_GRAPH``, or torch's own
``aot_eager`` backend is handed no graph for the sample either (``_aot_traces_no_graph``:
AOTAutograd cannot trace it for any backend). The last passes with a warning naming the
case.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.testing._comparison import default_tolerances
from torch.utils import _pytree as pytree

from . import cases, known

HALF = (torch.float16, torch.bfloat16)


def _clone(tree: Any) -> Any:
    """A copy of every tensor of ``tree`` as a fresh leaf that keeps ``requires_grad``."""

    def copy(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().clone().requires_grad_(x.requires_grad)
        return x

    return pytree.tree_map(copy, tree)


def _tensors(tree: Any) -> list[torch.Tensor]:
    leaves, _ = pytree.tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _results(out: Any, args: Any, kwargs: Any) -> tuple[Any, list[torch.Tensor]]:
    """What a call produced: its output, and its tensor arguments after the call."""
    return out, [t.detach() for t in _tensors((args, kwargs))]


def _stats() -> dict[str, int]:
    import tilefuse

    return tilefuse.stats()


def compare(actual: Any, expected: Any, tolerance: tuple[float, float] | None, what: str) -> None:
    """``assert_close`` at ``tolerance`` (rtol, atol), or the dtype's default when ``None``."""
    kwargs: dict[str, Any] = {}
    if tolerance is not None:
        kwargs = {"rtol": tolerance[0], "atol": tolerance[1]}
    torch.testing.assert_close(
        actual, expected, equal_nan=True, check_stride=False, msg=lambda m: f"{what}: {m}",
        **kwargs,
    )  # fmt: skip


def _in_float(call: Callable[..., Any], args: Any, kwargs: Any, like: Any) -> Any:
    """``call`` on float32 copies of the half-precision tensors in ``args``/``kwargs``, its
    results rounded back to the dtypes of ``like`` (the eager results)."""

    def up(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.detach().clone()
            return x.float() if x.dtype in HALF else x
        return x

    up_args, up_kwargs = pytree.tree_map(up, (args, kwargs))
    got = _results(call(*up_args, **up_kwargs), up_args, up_kwargs)
    got_leaves, _ = pytree.tree_flatten(got)
    like_leaves, spec = pytree.tree_flatten(like)
    if len(got_leaves) != len(like_leaves):
        return None
    rounded = [
        g.to(e.dtype) if isinstance(g, torch.Tensor) and isinstance(e, torch.Tensor) else g
        for g, e in zip(got_leaves, like_leaves)
    ]
    return pytree.tree_unflatten(rounded, spec)


# How much further from the float64 reference than eager a float32 result may be, where
# eager itself misses the reference by more than the tolerance (2, as PyTorch's own
# compiler tests allow against their float64 references).
EAGER_ERROR_FACTOR = 2.0


def _upcast(tree: Any, dtype: torch.dtype) -> Any:
    """``tree`` with every float32 tensor as a ``dtype`` leaf that keeps ``requires_grad``."""

    def up(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
            return x.detach().to(dtype).requires_grad_(x.requires_grad)
        return x

    return pytree.tree_map(up, tree)


def _round_like(got: Any, like: Any) -> Any:
    """``got``'s tensors rounded to the dtypes of ``like``'s; ``None`` if the trees differ."""
    got_leaves, _ = pytree.tree_flatten(got)
    like_leaves, spec = pytree.tree_flatten(like)
    if len(got_leaves) != len(like_leaves):
        return None
    rounded = [
        g.detach().to(e.dtype) if isinstance(g, torch.Tensor) and isinstance(e, torch.Tensor) else g
        for g, e in zip(got_leaves, like_leaves)
    ]
    return pytree.tree_unflatten(rounded, spec)


def _in_float64(call: Callable[..., Any], args: Any, kwargs: Any, like: Any) -> Any:
    """``call``'s results on float64 copies of the float32 tensors, rounded back to the
    dtypes of ``like``; ``None`` where the op refuses float64 or gives another structure."""
    up_args, up_kwargs = _upcast((args, kwargs), torch.float64)
    try:
        with torch.no_grad():
            got = _results(call(*up_args, **up_kwargs), up_args, up_kwargs)
    except Exception:  # noqa: BLE001  (no reference: the caller reports eager's mismatch)
        return None
    return _round_like(got, like)


def near_reference(
    actual: Any, expected: Any, reference: Any, tolerance: tuple[float, float] | None, what: str
) -> None:
    """Raise unless ``actual`` is as close to ``reference`` (eager at a higher precision,
    rounded once) as ``tolerance`` allows, or, element by element, no further from it than
    ``EAGER_ERROR_FACTOR`` times eager's own error (``expected``'s distance to it).

    Tensors that are not floating point, and every other leaf, must match ``reference`` as
    ``compare`` checks them. A non-finite eager error widens nothing.
    """
    got, _ = pytree.tree_flatten(actual)
    eager, _ = pytree.tree_flatten(expected)
    ref, _ = pytree.tree_flatten(reference)
    if not len(got) == len(eager) == len(ref):
        raise AssertionError(
            f"{what}: {len(got)} results, eager {len(eager)}, reference {len(ref)}"
        )
    for a, e, r in zip(got, eager, ref):
        floats = all(isinstance(t, torch.Tensor) and t.dtype.is_floating_point for t in (a, e, r))
        if not floats or not a.shape == e.shape == r.shape or a.dtype != r.dtype:
            compare(a, r, tolerance, what)
            continue
        rtol, atol = tolerance if tolerance is not None else default_tolerances(a)
        a64, e64, r64 = (t.detach().to(torch.float64) for t in (a, e, r))
        err = (a64 - r64).abs()
        own = (e64 - r64).abs().nan_to_num(nan=0.0, posinf=0.0)
        allowed = torch.maximum(atol + rtol * r64.abs(), EAGER_ERROR_FACTOR * own)
        ok = (err <= allowed) | (a64 == r64) | (a64.isnan() & r64.isnan())
        if bool(ok.all()):
            continue
        bad = (~ok).nonzero()[0].tolist() if a.dim() else []
        at = tuple(bad)
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.numel()} elements are further from eager in "
            f"float64 than the tolerance (rtol={rtol}, atol={atol}) and than "
            f"{EAGER_ERROR_FACTOR:g} times eager's own error; first at index {at}: "
            f"compiled {a64[at].item()!r}, eager {e64[at].item()!r}, "
            f"float64 reference {r64[at].item()!r}"
        )


def _compare_float64_reference(call, pristine, actual, expected, tolerance, what) -> None:
    """A float32 forward result that differs from eager: ``near_reference`` of eager in
    float64; eager's mismatch is reported where there is no such reference."""
    reference = _in_float64(call, *_clone(pristine), like=expected)
    if reference is None:
        compare(actual, expected, tolerance, what)
        return
    near_reference(actual, expected, reference, tolerance, f"{what} (float64 reference)")


@contextlib.contextmanager
def _no_guard_profiling() -> Iterator[None]:
    """Dynamo times every new guard set once, after flushing the CPU caches (about 60 ms a
    compile, a sixth of a CPU case): a metric for its logs that the sweep does not read."""
    guards = torch._dynamo.guards
    real = getattr(guards, "profile_guard_manager", None)
    if real is None:
        yield
        return
    guards.profile_guard_manager = lambda *args, **kwargs: 0.0
    try:
        yield
    finally:
        guards.profile_guard_manager = real


def _consumed(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` with each tensor it returns copied: a view the op returns becomes a kernel
    that reads through the view's layout (strides, storage offset), which the graph's
    output alone never does."""

    def copies(*args: Any, **kwargs: Any) -> Any:
        out = call(*args, **kwargs)
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)

    return copies


def run_case(case: cases.Case, device: str, consume: bool = False) -> None:
    """Compile ``case`` on ``device`` strictly and compare outputs and gradients to eager;
    ``consume``: compile the op followed by a copy of each output (``_consumed``)."""
    op = case.op
    sample = cases.sample_at(op, device, case.dtype, case.index)
    if sample is None:
        raise AssertionError(f"{case.id}: the OpInfo gives fewer samples on {device}")
    tolerance = known.tolerance(op, case.dtype, device)
    call: Callable[..., Any] = _consumed(op.op) if consume else op.op
    what = f"{case.id}{' consumed' if consume else ''} [{cases.describe(sample)}]"

    pristine = _clone(((sample.input, *sample.args), sample.kwargs))
    eager_args, eager_kwargs = _clone(pristine)
    comp_args, comp_kwargs = _clone(pristine)

    expected_out = call(*eager_args, **eager_kwargs)
    expected = _results(expected_out, eager_args, eager_kwargs)

    def fn(*args: Any) -> Any:
        return call(*args, **comp_kwargs)

    before = _stats()
    os.environ["TILEFUSE_STRICT"] = "1"
    torch._dynamo.reset()
    try:
        with _no_guard_profiling():
            actual_out = torch.compile(fn, backend="tilefuse")(*comp_args)
        actual = _results(actual_out, comp_args, comp_kwargs)
        actual, expected_forward = known.mask_undefined(case, device, pristine, actual, expected)
        try:
            compare(actual, expected_forward, tolerance, f"{what} forward")
        except AssertionError:
            if case.dtype == torch.float32:
                _compare_float64_reference(call, pristine, actual, expected, tolerance,
                                           f"{what} forward")  # fmt: skip
            elif case.dtype not in HALF:
                raise
            else:
                _compare_half_references(call, fn, pristine, actual, expected, tolerance, what)
        _check_backward(sample, case, tolerance, what, (eager_args, eager_kwargs),
                        expected_out, (comp_args, comp_kwargs), actual_out, pristine)  # fmt: skip
    finally:
        os.environ.pop("TILEFUSE_STRICT", None)
        torch._dynamo.reset()
    after = _stats()
    fallen = after["graphs_fallen_back"] - before["graphs_fallen_back"]
    assert fallen == 0, f"{case.id}: {fallen} graph(s) fell back to eager"
    compiled = after["graphs_compiled"] - before["graphs_compiled"]
    if compiled >= 1 or case.name in known.NO_GRAPH:
        return
    if _only_views_of(expected_out, (eager_args, eager_kwargs)):
        return
    assert _aot_traces_no_graph(call, *_clone(pristine)), (
        f"{case.id}: tilefuse compiled no graph (Dynamo ran the op eagerly), so this "
        "case tested nothing"
    )
    warnings.warn(
        f"{case.id}: AOTAutograd cannot trace this sample for any backend (torch's "
        "aot_eager is handed no graph either), so Dynamo runs it eagerly: only eager "
        "behaviour under torch.compile was checked",
        stacklevel=2,
    )


def _aot_traces_no_graph(call: Callable[..., Any], args: Any, kwargs: Any) -> bool:
    """Whether torch's own AOTAutograd backend, without decompositions (``aot_eager``),
    is handed no graph for ``call(*args, **kwargs)`` either.

    Dynamo runs a frame eagerly, whatever the backend, when tracing it for AOTAutograd
    raises one of the fake-tensor errors it treats as a graph break: an op whose output
    shape depends on data, such as the ``_unique`` in index_fill's gradient for a
    tensor ``value``. No AOTAutograd backend can compile such a sample. Where
    ``aot_eager`` does get a graph, a missing tilefuse graph is tilefuse's doing (a
    decomposition of its own table that fake tensors cannot trace, say).
    """
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs: list[torch.fx.GraphModule] = []

    def count(gm: torch.fx.GraphModule, _inputs: Any) -> Callable[..., Any]:
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    def fn(*args: Any) -> Any:
        return call(*args, **kwargs)

    torch._dynamo.reset()
    try:
        with _no_guard_profiling():
            torch.compile(fn, backend=aot_autograd(fw_compiler=count, bw_compiler=count))(*args)
    finally:
        torch._dynamo.reset()
    return not graphs


def _compare_half_references(call, fn, pristine, actual, expected, tolerance, what) -> None:
    """Half-precision results that differ from eager's may match either of two references:
    eager in float32 rounded once (a fused kernel keeps intermediates in float32), or the
    aten graph tilefuse compiled, run eagerly (AOTAutograd's decomposition rounds each step
    to the half type where eager's fused ATen kernel rounds once: tilefuse computes the
    graph it is given). Failing both, the result may still be no further from the float32
    reference than ``EAGER_ERROR_FACTOR`` times eager's own distance to it (``near_reference``):
    a composite such as binary_cross_entropy_with_logits rounds every step in eager, and a
    sum of such terms that cancel is several ulps off whichever order computes it. Raises
    the float32 reference's mismatch when none of the three holds."""
    reference = _in_float(call, *_clone(pristine), like=expected)
    if reference is None:
        raise AssertionError(f"{what} forward: differs from eager, and no float32 reference")
    try:
        compare(actual, reference, tolerance, f"{what} forward (float32 reference)")
    except AssertionError as float32_mismatch:
        graph_args, _ = _clone(pristine)
        try:
            graph_out = _aten_graph_eagerly(fn, graph_args)
        except Exception:  # noqa: BLE001  (no graph reference: report the mismatch above)
            raise float32_mismatch from None
        graph = _results(graph_out, graph_args, pristine[1])
        try:
            compare(actual, graph, tolerance, f"{what} forward (aten graph run eagerly)")
        except AssertionError:
            try:
                near_reference(actual, expected, reference, tolerance, f"{what} forward")
            except AssertionError:
                raise float32_mismatch from None


def _aten_graph_eagerly(fn: Callable[..., Any], args: Any) -> Any:
    """``fn(*args)`` through Dynamo and AOTAutograd with tilefuse's decompositions, the
    resulting aten graph run by eager kernels: what tilefuse is asked to compute."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    from tilefuse.frontend.decompositions import decomposition_table

    def run_graph(gm: torch.fx.GraphModule, _inputs: Any) -> Any:
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=run_graph, decompositions=decomposition_table())
    torch._dynamo.reset()
    with torch.no_grad():
        return torch.compile(fn, backend=backend)(*args)


def _only_views_of(out: Any, inputs: Any) -> bool:
    """Whether every tensor ``out`` holds shares memory with an input: a program of views
    alone, which Dynamo answers itself without calling a backend."""
    storages = {t.untyped_storage().data_ptr() for t in _tensors(inputs)}
    outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return bool(outs) and all(t.untyped_storage().data_ptr() in storages for t in outs)


def _check_backward(
    sample, case, tolerance, what, eager_in, expected, comp_in, actual, pristine
) -> None:
    """Compare gradients of a seeded random cotangent, for float32 samples that need them;
    a gradient that differs from eager's is compared with eager's gradients in float64
    (``near_reference``)."""
    if case.dtype != torch.float32 or not case.op.supports_autograd:
        return
    wrt_eager = [t for t in _tensors(eager_in) if t.requires_grad]
    wrt_comp = [t for t in _tensors(comp_in) if t.requires_grad]
    outs_eager = [t for t in _tensors(sample.output_process_fn_grad(expected)) if t.requires_grad]
    outs_comp = [t for t in _tensors(sample.output_process_fn_grad(actual)) if t.requires_grad]
    if not wrt_eager or not outs_eager:
        return
    assert len(outs_comp) == len(outs_eager), (
        f"{what}: compiled outputs that need grad: {len(outs_comp)}, eager: {len(outs_eager)}"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cases.seed_of(case.name, case.dtype) + 1)
        seeds = [torch.randn(o.shape, dtype=o.dtype).to(o.device) for o in outs_eager]
    grads_eager = torch.autograd.grad(outs_eager, wrt_eager, seeds, allow_unused=True)
    grads_comp = torch.autograd.grad(outs_comp, wrt_comp, seeds, allow_unused=True)
    reference: list[Any] | None = None
    for i, (g_comp, g_eager, w) in enumerate(zip(grads_comp, grads_eager, wrt_eager)):
        if g_eager is None and g_comp is None:
            continue
        g_eager = torch.zeros_like(w) if g_eager is None else g_eager
        g_comp = torch.zeros_like(w) if g_comp is None else g_comp
        try:
            compare(g_comp, g_eager, tolerance, f"{what} backward, input {i}")
        except AssertionError:
            if reference is None:
                reference = _float64_gradients(sample, case.op.op, pristine, seeds, wrt_eager)
            if reference is None:
                raise
            g_ref = torch.zeros_like(w) if reference[i] is None else reference[i]
            near_reference(g_comp, g_eager, g_ref, tolerance,
                           f"{what} backward, input {i} (float64 reference)")  # fmt: skip


def _float64_gradients(sample, call, pristine, seeds, like) -> list[Any] | None:
    """Eager's gradients of ``seeds`` computed in float64, rounded to the dtypes of
    ``like`` (the inputs they are for); ``None`` where the op refuses float64."""
    args, kwargs = _upcast(_clone(pristine), torch.float64)
    try:
        out = sample.output_process_fn_grad(call(*args, **kwargs))
        outs = [t for t in _tensors(out) if t.requires_grad]
        wrt = [t for t in _tensors((args, kwargs)) if t.requires_grad]
        up = [s.to(torch.float64) if s.dtype == torch.float32 else s for s in seeds]
        grads = torch.autograd.grad(outs, wrt, up, allow_unused=True)
    except Exception:  # noqa: BLE001  (no reference: the caller reports eager's mismatch)
        return None
    if len(grads) != len(like):
        return None
    return [None if g is None else g.to(w.dtype) for g, w in zip(grads, like)]
