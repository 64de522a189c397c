"""The ``torch_dynamo_backends`` entry point: ``torch.compile(fn, backend="tilefuse")``.

Flow: check that some device of the graph has a backend (else run eagerly, one warning);
AOTAutograd with tilefuse's decomposition table splits forward and backward;
each half is compiled by ``tilefuse.pipeline.compile_graph``, which also builds every
kernel. A graph that cannot be compiled, or whose compiled form fails on its first
call, runs eagerly from then on with one warning naming the error, never a crash
(``TILEFUSE_STRICT=1`` or ``options={"strict": True}`` raises instead).

Graphs with symbolic sizes (Dynamo's dynamic shapes) are compiled once for every size:
AOTAutograd traces them with the symbolic example inputs and ``compile_graph`` keeps the
sizes symbolic (``graphs_compiled_symbolic`` in ``tilefuse.stats()``). Where that cannot
be done (``SymbolicUnsupported``, or any other failure of the symbolic compile), or with
``TILEFUSE_DYNAMIC_SIZES=0`` / ``options={"dynamic_sizes": False}``, the graph is
specialized as before: compiled once per distinct concrete input signature, keeping at
most ``TILEFUSE_MAX_SPECIALIZATIONS`` variants per graph (least recently used dropped
first; see ``_Specializer``), and its report says why (``symbolic_fallbacks`` counts
them). A backward graph that fails symbolically after its forward compiled is
specialized on its own (``_GraphSpecializer``). With ``mode="reduce-overhead"``
(or option ``cuda_graphs`` / ``TILEFUSE_CUDA_GRAPHS``) each compiled graph is replayed as a
CUDA graph (``tilefuse.cuda_graphs``); a graph that runs eagerly runs without one, counted
in ``cuda_graph_fallbacks`` with one warning.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.exc import RestartAnalysis
from torch._functorch.aot_autograd import make_boxed_func

from . import compile_options, config, counters, cuda_graphs, plugin
from .backend_selection import owner, served_device_types, template_selector
from .errors import NoBackendError, TilefuseError
from .frontend.decompositions import decomposition_table
from .frontend.dynamo_passes import dense_attention_masks
from .frontend.partition import partition_for
from .lru import BoundedLRU

log = logging.getLogger("tilefuse")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("tilefuse: %s", message)


def forget_warnings() -> None:
    """Let every once-only warning show again (``tilefuse.reset()``)."""
    _warned.clear()


def _describe(exc: BaseException) -> str:
    kind = "" if isinstance(exc, TilefuseError) else f"{type(exc).__name__}: "
    text = str(exc).strip()
    return kind + (text.splitlines()[0] if text else "")


def graph_device_types(example_inputs: Sequence[Any]) -> list[str]:
    """Device types of the tensor inputs, in first-seen order."""
    seen: list[str] = []
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.device.type not in seen:
            seen.append(x.device.type)
    return seen or ["cpu"]


def _eager(gm: torch.fx.GraphModule) -> Callable:
    """``gm`` run eagerly, each floating-point output in the floating dtype its example
    value has.

    Graphs compiled later read these outputs (a backward reads the forward's saved
    tensors) with kernels made for those dtypes, and an op's meta function and its
    kernel can disagree: CPU ``native_layer_norm`` of a bfloat16 input with float32
    weights returns float32 statistics, its meta says bfloat16 (the price: statistics
    rounded to bfloat16, as every compiled path that follows the meta rounds them).

    Its ``view`` nodes become ``reshape`` (in place, on ``gm``): a backward reads tensors
    the compiled forward saved, and those may have strides eager's never have (padded
    GEMM rows, channels-last), which a ``view`` merging their dims refuses; ``reshape``
    is the same view wherever one exists and a copy where none does."""
    counters.bump("graphs_fallen_back")
    _views_as_reshapes(gm)
    run = make_boxed_func(gm.forward)
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    if not isinstance(output, (list, tuple)):  # (AOTAutograd's graphs return tuples)
        return run
    metas = [n.meta.get("val") if isinstance(n, torch.fx.Node) else None for n in output]
    dtypes = [m.dtype if isinstance(m, torch.Tensor) else None for m in metas]
    if not any(dtypes):
        return run

    def call(args: list[Any]) -> Any:
        outs = list(run(args))
        for i, (out, want) in enumerate(zip(outs, dtypes)):
            if (
                isinstance(out, torch.Tensor)
                and want is not None
                and out.dtype != want
                and out.dtype.is_floating_point
                and want.is_floating_point
            ):
                outs[i] = out.to(want)
        return outs

    call._boxed_call = True  # type: ignore[attr-defined]
    return call


def _views_as_reshapes(gm: torch.fx.GraphModule) -> None:
    """Retarget ``gm``'s ``aten.view``/``aten._unsafe_view`` nodes to ``aten.reshape``."""
    aten = torch.ops.aten
    views = (aten.view.default, aten._unsafe_view.default)
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in views:
            node.target = aten.reshape.default
            changed = True
    if changed:
        gm.recompile()


def _eager_without_cuda_graphs(why: str) -> None:
    """A graph that asked for CUDA graphs runs eagerly (``why``): count it and say so once.
    Call it under the compile's ``config.overrides``, outside strict mode (which raised)."""
    if config.cuda_graphs():
        cuda_graphs.refuse(f"it runs eagerly ({why})", False, _warn_once)


def _restrided(run: Callable, strides: Sequence[tuple[int, ...] | None]) -> Callable:
    """``run`` with each tensor output copied into ``strides`` where it has others."""

    def call(args: list[Any]) -> Any:
        outs = list(run(args))
        for i, (out, want) in enumerate(zip(outs, strides)):
            if isinstance(out, torch.Tensor) and want is not None and out.stride() != want:
                outs[i] = torch.empty_strided(out.shape, want, dtype=out.dtype,
                                              device=out.device).copy_(out)  # fmt: skip
        return outs

    call._boxed_call = True  # type: ignore[attr-defined]
    return call


class _EagerAfterFirstFailure:
    """A compiled graph whose first call, if it raises, reruns the graph eagerly and
    keeps running it eagerly from then on (strict mode re-raises instead).

    With ``fallback`` (a graph compiled for every size), a failed first call runs the
    graph through ``fallback(why)`` instead of eagerly: it is then specialized per shape.

    The first call keeps its own copy of the argument list, because the wrapper
    empties the one it is given to free inputs early. A failure part-way through the
    first call is not undone: an input the compiled graph already updated in place, or
    random numbers it already drew, are updated or drawn again by the eager rerun.
    ``running_eagerly`` says whether it switched (CUDA graphs are then not captured).
    """

    def __init__(
        self,
        compiled: Callable,
        gm: torch.fx.GraphModule,
        strict: bool,
        output_strides: Sequence[tuple[int, ...] | None] | None = None,
        fallback: Callable[[str], Callable] | None = None,
    ) -> None:
        """``output_strides``: the strides the compiled graph reported for its outputs,
        which an eager rerun must return too (the backward graph was compiled for them);
        ``None`` where they are eager's. ``fallback(why)``: what runs instead when the first
        call fails (a symbolic graph is specialized); ``None``: eager."""
        # Takes the argument list, as AOTAutograd calls it. An instance attribute: the
        # wrappers torch puts around a backward function copy only the instance's dict.
        self._boxed_call = True
        self.run: Callable = compiled
        self.gm = gm
        self.strict = strict
        self.fallback = fallback
        self.first = True
        self.running_eagerly = False
        self.output_strides = output_strides

    def __call__(self, args: list[Any]) -> Any:
        if not self.first:
            return self.run(args)
        saved = list(args)
        compiled = self.run
        try:
            out = compiled(args)
        except Exception as exc:
            if self.strict:
                raise
            log.debug("tilefuse: first-call failure", exc_info=True)
            self.first = False
            if self.fallback is not None:
                why = f"its symbolic-size kernels failed on the first call ({_describe(exc)})"
                self.run = self.fallback(why)
                return self.run(saved)
            _warn_once(f"a compiled graph failed on its first call ({_describe(exc)}); "
                       "running it eagerly from now on")  # fmt: skip
            self.run = _eager(self.gm)
            if self.output_strides is not None:
                self.run = _restrided(self.run, self.output_strides)
            self.running_eagerly = True
            return self.run(saved)
        self.first = False
        # From now on call the graph's wrapper itself (a ``CompiledGraph``'s ``call``):
        # one Python frame fewer per call.
        self.run = getattr(compiled, "call", compiled)
        return out


class _SymbolicFailed(Exception):
    """The forward graph could not be compiled for every size (``str()``: why)."""


def _inner_compiler(
    settings: Mapping[str, Any], note: str = "", symbolic: bool = False, stage: str = "forward"
) -> Callable:
    """The AOTAutograd forward/backward compiler, applying this compile's ``settings``
    (the backward graph compiles later, at the first backward call). A non-empty
    ``note`` becomes the ``specialization`` line of each graph's report.

    With ``symbolic``, the example inputs have symbolic sizes and any failure to compile
    is not final: the forward raises ``_SymbolicFailed`` (the Dynamo graph is then
    specialized) and the backward returns a ``_GraphSpecializer``."""

    def inner(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        from .pipeline import compile_graph

        reported, free = _saved_activations(gm)
        # A forward graph's saved tensors may keep padded GEMM rows (gemm_rows): AOTAutograd
        # compiles the backward for the strides it reports (a symbolic graph reports none).
        padded = stage == "forward" and reported is not None and not symbolic
        with config.overrides(settings):
            strict = config.strict()
            graphs = config.cuda_graphs()
            # per-shape CUDA graphs a symbolic-size graph keeps (read under its options)
            max_shapes = config.max_specializations() if graphs and symbolic else None
            try:
                compiled = compile_graph(gm, example_inputs, free, padded)
            except Exception as exc:
                if symbolic:
                    log.debug("tilefuse: symbolic compile failure", exc_info=True)
                    if stage == "forward":
                        raise _SymbolicFailed(_describe(exc)) from exc
                    return _GraphSpecializer(gm, settings, _describe(exc))
                if strict:
                    raise
                _warn_once(f"could not compile a graph ({_describe(exc)}); running it eagerly")
                log.debug("tilefuse: compile failure", exc_info=True)
                _eager_without_cuda_graphs("it could not be compiled")
                return _eager(gm)
        report = getattr(compiled, "report", None)
        if note and report is not None:
            # The report was already handed to collect_reports() blocks: they hold this
            # same object, so they see the note too (the debug directory does not).
            report.specialization = note
        counters.bump("graphs_compiled")
        strides = getattr(compiled, "output_strides", None)
        if reported is not None and strides is not None and not symbolic:
            # (a symbolic graph keeps eager's layout: nothing to report)
            reported.extend(strides)
        fallback: Callable[[str], Callable] | None = None
        if symbolic and report is not None and report.specialization.startswith("none"):
            counters.bump("graphs_compiled_symbolic")
            fallback = functools.partial(_GraphSpecializer, gm, settings)
        run = _EagerAfterFirstFailure(
            compiled, gm, strict, strides if free else None, fallback=fallback
        )
        if graphs:
            return cuda_graphs.wrap(run, gm, example_inputs, strict, _warn_once, max_shapes)
        return run

    return inner


def _saved_activations(gm: torch.fx.GraphModule) -> tuple[list | None, frozenset[int]]:
    """Where AOTAutograd takes this forward graph's output strides, and which outputs
    are activations saved for backward (their strides may differ from eager's).

    AOTAutograd compiles the backward graph for the strides a forward compiler reports
    (``TracingContext.report_output_strides``, as Inductor's layout optimization does), so
    a saved activation can stay channels-last. ``(None, empty)`` elsewhere: inference
    graphs, backward graphs, graphs compiled outside AOTAutograd's forward compile.
    """
    from torch._guards import TracingContext

    context = TracingContext.try_get()
    reported = getattr(context, "output_strides", None)
    meta = getattr(context, "fw_metadata", None)
    if reported is None or meta is None:
        return None, frozenset()
    try:
        saved = meta.tensors_saved_for_backwards_slice
    except (AssertionError, AttributeError):  # metadata this torch lays out otherwise
        return reported, frozenset()
    outputs = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    return reported, frozenset(range(count)[saved])


def _is_symbolic(inputs: Sequence[Any]) -> bool:
    for x in inputs:
        if isinstance(x, torch.SymInt):
            return True
        if isinstance(x, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in x.shape):
            return True
    return False


def _symbol_names(inputs: Sequence[Any]) -> list[str]:
    """The size symbols (``s0``, ``s1``...) appearing in ``inputs``, sorted."""
    names: set[str] = set()
    for x in inputs:
        sizes = x.shape if isinstance(x, torch.Tensor) else (x,)
        for s in sizes:
            if isinstance(s, torch.SymInt):
                names.update(str(sym) for sym in s.node.expr.free_symbols)
    return sorted(names)


def _aot(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    settings: Mapping[str, Any],
    note: str = "",
    symbolic: bool = False,
) -> Callable:
    dense_attention_masks(gm)
    backend = aot_autograd(
        fw_compiler=_inner_compiler(settings, note, symbolic, "forward"),
        bw_compiler=_inner_compiler(settings, note, symbolic, "backward"),
        decompositions=decomposition_table(),
        partition_fn=partition_for(gm),
    )
    return backend(gm, example_inputs)


def _signature(args: Sequence[Any]) -> tuple:
    return tuple(
        (tuple(a.shape), a.stride(), a.dtype, a.device, a.requires_grad)
        if isinstance(a, torch.Tensor)
        else a
        for a in args
    )


class _GraphSpecializer:
    """An AOTAutograd graph (a backward, whose forward compiled for every size; or one
    whose symbolic compile failed on its first call) that could not be compiled for every
    size: compiled per concrete input signature instead, by tracing it again with each
    signature's inputs (``make_fx``, fake tensors).

    Called boxed, as AOTAutograd calls compiled graphs. Keeps at most
    ``config.max_specializations()`` variants (LRU; ``specializations_evicted``). A
    variant that cannot be traced or compiled runs the graph eagerly (counted in
    ``graphs_fallen_back``; strict mode raises).
    """

    def __init__(self, gm: torch.fx.GraphModule, settings: Mapping[str, Any], why: str) -> None:
        self._boxed_call = True
        self.gm = gm
        self.settings = settings
        self.why = why
        with config.overrides(settings):
            self.limit = config.max_specializations()
        self.compiled: BoundedLRU[tuple, Callable] = BoundedLRU(self.limit)
        self._lock = threading.Lock()
        counters.bump("symbolic_fallbacks")
        log.info("tilefuse: a backward graph is specialized per shape: %s", why)

    def __call__(self, args: list[Any]) -> Any:
        key = _signature(args)
        with self._lock:
            fn = self.compiled.get(key)
        if fn is None:
            fn = self._specialize(args)
            with self._lock:
                evicted = self.compiled.put(key, fn)
            if evicted:
                counters.bump("specializations_evicted", evicted)
        return fn(args)

    def _specialize(self, args: Sequence[Any]) -> Callable:
        from torch.fx.experimental.proxy_tensor import make_fx

        from .pipeline import compile_graph

        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        note = (
            f"specialized for input shapes {shapes}: tilefuse could not compile this "
            f"backward graph for every size ({self.why})"
        )
        with config.overrides(self.settings):
            strict = config.strict()
            try:
                traced = make_fx(self.gm, tracing_mode="fake")(*args)
                compiled = compile_graph(traced, list(args))
            except Exception as exc:
                if strict:
                    raise
                _warn_once(f"could not specialize a graph ({_describe(exc)}); running it eagerly")
                log.debug("tilefuse: specialization failure", exc_info=True)
                return _eager(self.gm)
        compiled.report.specialization = note
        counters.bump("specializations_compiled")
        return _EagerAfterFirstFailure(compiled, self.gm, strict)


_specialized_graph_ids = itertools.count()


class _Specializer:
    """Runs a graph whose inputs have symbolic sizes by compiling it once per concrete
    input signature: shapes, strides, dtypes, devices and ``requires_grad`` of tensors,
    non-tensor arguments, and the values of 0-dim tensors read back with ``.item()``.

    Variants live in an LRU of at most ``limit`` entries (``config.max_specializations()``
    when the graph was handed to tilefuse). A call whose signature has a variant runs it
    and marks it most recently used; any other compiles one (``specializations_compiled``
    in ``tilefuse.stats()``) and, when that makes one too many, drops the least recently
    used (``specializations_evicted``). A signature whose variant was dropped compiles
    again when it comes back. A variant that cannot be compiled runs eagerly (counted in
    ``graphs_fallen_back``; strict mode raises) and takes a slot like any other. Each
    compiled variant's report says that it was specialized, why, and how many variants
    the graph has; the first one is also logged (INFO), and the first eviction warned
    about once per graph.
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        settings: Mapping[str, Any],
        limit: int,
        symbols: Sequence[str] = (),
        why: str = "",
    ) -> None:
        self.gm = gm
        self.settings = settings
        self.limit = limit
        self.symbols = list(symbols)
        self.why = why  # why it was not compiled once for every size
        self.graph_id = next(_specialized_graph_ids)
        self.variants_compiled = 0  # for this graph, evicted ones included
        self.compiled: BoundedLRU[tuple, Callable] = BoundedLRU(limit)
        self._lock = threading.Lock()

    def _scalar_inputs(self) -> list[int]:
        """Indices of placeholders that the graph reads back with ``.item()``."""
        if not hasattr(self, "_item_inputs"):
            placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
            self._item_inputs = sorted({
                placeholders.index(n.args[0]) for n in self.gm.graph.nodes
                if n.op == "call_method" and n.target == "item" and n.args[0] in placeholders
            })  # fmt: skip
        return self._item_inputs

    def _bake_scalars(self, args: Sequence[Any]) -> torch.fx.GraphModule:
        """Python numbers that Dynamo passed as 0-dim tensors and reads back with
        ``.item()`` become constants of the specialized graph (and part of its key)."""
        gm = torch.fx.GraphModule(self.gm, copy.deepcopy(self.gm.graph))
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for node in list(gm.graph.nodes):
            if node.op != "call_method" or node.target != "item":
                continue
            src = node.args[0]
            if src not in placeholders:
                continue
            value = args[placeholders.index(src)]
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                continue
            scalar = value.item()

            def swap(n: Any, item: Any = node, value: Any = scalar) -> Any:
                return value if n is item else n

            for user in list(node.users):
                user.args = torch.fx.node.map_arg(user.args, swap)
                user.kwargs = torch.fx.node.map_arg(user.kwargs, swap)
            gm.graph.erase_node(node)
        gm.recompile()
        return gm

    def __call__(self, *args: Any) -> Any:
        baked = tuple(
            args[i].item() if isinstance(args[i], torch.Tensor) and args[i].dim() == 0 else None
            for i in self._scalar_inputs()
        )
        key = baked + _signature(args)
        with self._lock:
            fn = self.compiled.get(key)
        if fn is None:
            fn = self._specialize(key, args)
        return fn(*args)

    def _specialize(self, key: tuple, args: Sequence[Any]) -> Callable:
        """Compile the variant for ``key`` (outside the lock: compiles are slow), store it
        as most recently used and drop the least recently used beyond ``limit``."""
        with self._lock:
            number = self.variants_compiled + 1
            live = min(len(self.compiled) + 1, self.limit)
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        names = ", ".join(self.symbols) or "unnamed"
        why = self.why or "symbolic sizes are turned off (TILEFUSE_DYNAMIC_SIZES)"
        note = (
            f"specialized for input shapes {shapes}: its Dynamo graph (dynamic-shape graph "
            f"#{self.graph_id}) has symbolic sizes ({names}), which tilefuse compiles per "
            f"concrete shape here because {why}; variant {number} compiled for it, {live} "
            f"kept of at most {self.limit} (TILEFUSE_MAX_SPECIALIZATIONS)"
        )
        if number == 1:
            log.info(
                "tilefuse: dynamic-shape graph #%d has symbolic sizes (%s); tilefuse compiles "
                "it once per concrete shape, keeping at most %d variants",
                self.graph_id, names, self.limit,
            )  # fmt: skip
        try:
            fn = _aot(self._bake_scalars(args), list(args), self.settings, note)
            counters.bump("specializations_compiled")
        except Exception as exc:
            with config.overrides(self.settings):
                if config.strict():
                    raise
                _eager_without_cuda_graphs("it could not be specialized")
            _warn_once(
                f"could not specialize a dynamic-shape graph ({_describe(exc)}); running it eagerly"
            )
            counters.bump("graphs_fallen_back")
            fn = self.gm.forward
        with self._lock:
            self.variants_compiled += 1
            evicted = self.compiled.put(key, fn)
        if evicted:
            counters.bump("specializations_evicted", evicted)
            _warn_once(
                f"dynamic-shape graph #{self.graph_id} has more input shapes than the "
                f"{self.limit} compiled variants kept per graph; the least recently used are "
                "dropped and compiled again when their shape returns (raise "
                "TILEFUSE_MAX_SPECIALIZATIONS or options={'max_specializations': N} to keep more)"
            )
        return fn


def _symbolic_failure(exc: BaseException) -> str:
    """Why the symbolic compile failed: the ``_SymbolicFailed`` message in ``exc``'s chain,
    else ``exc`` itself (AOTAutograd could not trace it symbolically)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _SymbolicFailed):
            return f"it could not be compiled for every size ({seen})"
        seen = seen.__cause__ or seen.__context__
    return f"it could not be traced for every size ({_describe(exc)})"


_warmed_device_types: set[str] = set()


def _warm_selector(device_types: Sequence[str], settings: Mapping[str, Any]) -> None:
    """At the first graph this process compiles for a device type, in any autotune mode but
    ``off``, let the template selector start what a later selection needs
    (``plugin.TemplateSelector``'s optional ``warm_up``); never fails the compile."""
    new = [d for d in device_types if d not in _warmed_device_types]
    if not new:
        return
    _warmed_device_types.update(new)
    try:
        with config.overrides(settings):
            if config.autotune_mode() == "off":
                return
        warm_up = getattr(template_selector(), "warm_up", None)
        for device_type in new if callable(warm_up) else ():
            warm_up(device_type)
    except Exception as exc:  # a warm-up is an optimisation: the compile goes on
        log.debug("tilefuse: the template selector's warm-up failed: %s", exc)


def tilefuse_backend(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    mode: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Callable:
    """Compile a Dynamo FX graph; on any device without a backend, run it eagerly.

    ``mode`` and ``options`` are ``torch.compile``'s (see ``compile_options``); a mode
    or option tilefuse does not know raises ``TilefuseError``. With strict mode a
    missing backend raises ``NoBackendError`` instead of running eagerly.
    """
    settings = compile_options.parse(mode, options)
    with config.overrides(settings):
        # Malformed settings are reported here, before any work.
        config.strict()
        config.cpp_wrapper()
        config.cuda_graphs()
        limit = config.max_specializations()
    # Ops on a device no backend serves run as externs inside the graph (lowering warns
    # once) when backends serve another device here; with none served at all, the graph
    # runs eagerly.
    served = served_device_types()
    for device_type in graph_device_types(example_inputs):
        if served and device_type not in served:
            continue
        try:
            owner(device_type, plugin.CAP_POINTWISE)
        except NoBackendError as exc:
            with config.overrides(settings):
                if config.strict():
                    raise
                _eager_without_cuda_graphs("no backend serves its device")
            _warn_once(f"{exc} Running this graph eagerly.")
            counters.bump("graphs_fallen_back")
            return gm.forward
    _warm_selector(graph_device_types(example_inputs), settings)
    if _is_symbolic(example_inputs):
        with config.overrides(settings):
            dynamic = config.dynamic_sizes()
        why = ""
        if dynamic:
            try:
                return _aot(gm, example_inputs, settings, symbolic=True)
            except RestartAnalysis:
                raise  # Dynamo's own control flow (it traces the frame again)
            except Exception as exc:
                why = _symbolic_failure(exc)
                counters.bump("symbolic_fallbacks")
                log.info("tilefuse: a dynamic-shape graph is specialized per shape: %s", why)
        return _Specializer(gm, settings, limit, _symbol_names(example_inputs), why)
    try:
        return _aot(gm, example_inputs, settings)
    except RestartAnalysis:
        raise  # Dynamo's own control flow (it traces the frame again)
    except Exception as exc:  # AOTAutograd refused the graph (e.g. it cannot functionalize)
        with config.overrides(settings):
            if config.strict():
                raise
            _eager_without_cuda_graphs("AOTAutograd could not trace it")
        _warn_once(f"could not trace a graph for compiling ({_describe(exc)}); running it eagerly")
        log.debug("tilefuse: AOTAutograd failure", exc_info=True)
        counters.bump("graphs_fallen_back")
        return gm.forward
