"""CUDA-graph replay of compiled graphs (``mode="reduce-overhead"``, option ``cuda_graphs``).

``wrap(compiled, gm, example_inputs, strict, warn)`` is what the Dynamo entry calls for
each compiled forward or backward graph when ``config.cuda_graphs()`` is on. It returns
either a ``CudaGraphRunner`` around ``compiled`` or, where CUDA graphs cannot be used,
``compiled`` itself after ``refuse`` (one warning naming why through ``warn``, counted in
``cuda_graph_fallbacks``; with ``strict`` ``errors.CudaGraphsRefused`` instead).

What a runner does, call by call (it takes AOTAutograd's argument list and empties it):

1. **Warm-up** (first call): runs ``compiled`` once on a side stream, as PyTorch's CUDA
   graph documentation asks (lazy initialisation, cuBLAS workspaces, first-launch module
   loads happen outside capture), and notes every tensor input's address, sizes and
   strides. Its outputs are the call's outputs.
2. **Capture** (second call): inputs whose address, sizes and strides did not change
   (parameters, buffers) are *static*: the graph reads them in place. Every other tensor
   input gets a static buffer of its own layout. The graph is captured on the side stream
   into a private memory pool (``CUDAGraph.capture_begin``; intermediates and outputs
   live there), then replayed for this call. A "static" input is checked by address each
   call, never kept alive by the runner: a tensor that happened to land where the
   previous one was (the caching allocator reuses blocks) is read in place while it
   keeps landing there, and costs one re-capture when it stops.
3. **Replay** (later calls): copy the non-static inputs into their buffers, replay, copy
   back into the caller's tensors any input the graph writes in place, and hand out
   outputs that the next replay cannot overwrite (below). A static input whose address
   changed is demoted to a copied one and the graph captured again. A call whose
   non-tensor arguments differ from the captured ones runs without the graph.

A graph compiled for every size (symbolic sizes) is called with many shapes: ``wrap``
gives it a ``ShapeRunners``, one runner as above per input-shape signature (the sizes and
dtypes of its tensor inputs and its integer arguments, which carry the symbolic sizes),
each warmed up, captured and replayed for its own shape. At most ``max_shapes`` runners
are kept (``config.max_specializations()``, ``TILEFUSE_MAX_SPECIALIZATIONS``; LRU): the
least recently used is dropped with its graph and pool (``cuda_graphs_evicted``) and its
shape starts again from a warm-up when it returns. Once one runner is refused, every
shape of the graph runs without CUDA graphs.

Outputs: a replay rewrites the static outputs in the pool, so they are never handed out.
An output that is a view of an input is rebuilt as the same view of the caller's tensor
(what eager returns); every other output storage is copied once per call into a fresh
allocation, keeping sizes, strides, offsets and the aliasing between outputs. The cost,
per call: one device-to-device copy of every non-static input and of every output
storage, plus the pool (the graph's peak of intermediates and outputs), held while the
graph lives. In training the forward's saved tensors are outputs of the forward and
inputs of the backward, so each is copied twice per step (once, where the allocator hands
the copies the same addresses every step: the backward then reads them in place).

Random numbers: ops that draw from PyTorch's CUDA generator (eager externs such as
dropout's) are captured through its graph-safe Philox state: each replay advances the
generator's offset, so replays draw new numbers and ``torch.manual_seed`` applies. A
kernel that generates random numbers itself must read its seed and offset on the device
for the same to hold; one that bakes them as launch arguments would repeat its numbers.

Refused (the graph runs without CUDA graphs): an input on a device other than CUDA
(a CPU tensor, even a 0-dim one), an output on another device, inputs on several CUDA
devices, no CUDA tensor input, CUDA unavailable, a compiled graph that runs eagerly
(its first call failed), a capture error (an op that synchronises, such as ``.item()``
or a copy to the CPU), and a static input demoted more often than the graph has inputs.
A call made while the current stream is already capturing (a user's own
``torch.cuda.graph``) runs the compiled graph directly, to be captured by that graph.

This module tests device types: CUDA graphs are a CUDA runtime feature (HIP's, under a
ROCm build of PyTorch, which also calls its devices ``cuda``), not a backend's choice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import torch

from . import config, counters
from .errors import CudaGraphsRefused
from .lru import BoundedLRU

log = logging.getLogger("tilefuse")

Warn = Callable[[str], None]


def _refusal_text(reason: str) -> str:
    return (
        f"CUDA graphs (mode='reduce-overhead' or option cuda_graphs) are not used for a "
        f"graph: {reason}; it runs without them"
    )


def refuse(reason: str, strict: bool, warn: Warn) -> None:
    """Count a graph that asked for CUDA graphs and runs without them, and say why
    (``warn``, once per reason); with ``strict`` raise ``CudaGraphsRefused`` instead."""
    text = _refusal_text(reason)
    if strict:
        raise CudaGraphsRefused(
            text + ". Compile it without mode='reduce-overhead' (and with "
            "TILEFUSE_CUDA_GRAPHS unset or option cuda_graphs False), or outside strict mode "
            "to run it without CUDA graphs"
        )
    counters.bump("cuda_graph_fallbacks")
    warn(text)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# ---- what is refused before any call -------------------------------------------------


def _devices(values: Sequence[Any]) -> list[torch.device]:
    return [v.device for v in values if isinstance(v, torch.Tensor)]


def _output_values(gm: torch.fx.GraphModule) -> list[Any]:
    """The example values (``meta["val"]``) of the graph's outputs, where recorded."""
    flat: list[Any] = []
    for node in gm.graph.nodes:
        if node.op == "output":
            torch.fx.node.map_arg(node.args[0], lambda n: flat.append(n.meta.get("val")))
    return flat


def refusal_reason(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> str | None:
    """Why the graph ``gm`` with ``example_inputs`` cannot be captured, or ``None``."""
    devices = _devices(example_inputs)
    for dev in devices:
        if dev.type != "cuda":
            return f"it has a {dev.type} tensor input (CUDA graphs need every input on CUDA)"
    if not devices:
        return "it has no CUDA tensor input"
    if len(set(devices)) > 1:
        names = ", ".join(sorted({str(d) for d in devices}))
        return f"its inputs are on several CUDA devices ({names})"
    for dev in _devices(_output_values(gm)):
        if dev.type != "cuda":
            return f"it has a {dev.type} tensor output"
    if not torch.cuda.is_available():
        return "CUDA is not available in this process"
    return None


def mutated_inputs(gm: torch.fx.GraphModule) -> frozenset[int]:
    """Indices of the placeholders of ``gm`` that an op writes in place (its schema marks
    the argument written). AOTAutograd usually returns updated inputs as outputs instead;
    this covers graphs that keep the mutation."""
    placeholders = {n: i for i, n in enumerate(n for n in gm.graph.nodes if n.op == "placeholder")}
    found: set[int] = set()
    for node in gm.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for i, arg in enumerate(schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if value in placeholders:
                found.add(placeholders[value])
    return frozenset(found)


# ---- capture and replay -----------------------------------------------------------------


class Graph(Protocol):
    """One captured graph: ``capture(fn, args)`` records ``fn(args)`` and returns its
    outputs (static: each replay rewrites them); ``replay()`` runs it again."""

    def capture(self, fn: Callable[[list[Any]], Any], args: list[Any]) -> Any: ...

    def replay(self) -> None: ...


_side_streams: dict[torch.device, Any] = {}


def _side_stream(device: torch.device) -> Any:
    """The one side stream of ``device`` that warm-ups and captures run on."""
    stream = _side_streams.get(device)
    if stream is None:
        stream = _side_streams.setdefault(device, torch.cuda.Stream(device))
    return stream


def _run_on_side_stream(fn: Callable[[list[Any]], Any], args: list[Any], device: Any) -> Any:
    """``fn(args)`` on the side stream of ``device`` (inline for a non-CUDA device),
    ordered after the current stream's work and before its later work."""
    if device is None or device.type != "cuda":
        return fn(args)
    stream = _side_stream(device)
    current = torch.cuda.current_stream(device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        out = fn(args)
    current.wait_stream(stream)
    return out


class _CudaGraph:
    """A ``torch.cuda.CUDAGraph`` captured on the side stream into its own private pool.

    Not through ``torch.cuda.graph``: when its capture fails, that context manager leaves
    its capture stream current (``capture_end`` raises before the stream is restored), so
    the caller's later work would run on another stream. Here the stream context always
    exits, and the first error (the op that broke the capture) is the one raised.
    """

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[list[Any]], Any], args: list[Any]) -> Any:
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        torch.cuda.synchronize(device)  # the inputs' producers have finished
        with torch.cuda.stream(_side_stream(device)):
            # thread_local: another thread's CUDA calls during this capture are no error.
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                out = fn(args)
            except BaseException:
                try:
                    self.graph.capture_end()
                except Exception:  # the capture is invalid anyway; report the first error
                    log.debug("tilefuse: ending a failed CUDA graph capture", exc_info=True)
                raise
            self.graph.capture_end()
        return out

    def replay(self) -> None:
        self.graph.replay()


def _layout(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device)


def _writable(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every stride-0 dimension narrowed to one element: the same memory,
    without the overlap that ``copy_`` refuses to write into."""
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if stride == 0 and size > 1:
            t = t.narrow(dim, 0, 1)
    return t


def _view_on(storage: Any, like: torch.Tensor, offset: int) -> torch.Tensor:
    """A tensor with ``like``'s dtype, sizes and strides at ``offset`` of ``storage``."""
    out = torch.empty(0, dtype=like.dtype, device=like.device)
    return out.set_(storage, offset, like.shape, like.stride())


class CudaGraphRunner:
    """Runs a compiled graph (a boxed callable) through warm-up, capture and replays, as
    the module docstring describes. ``graph_factory`` makes the ``Graph`` to capture into
    (default: a ``torch.cuda.CUDAGraph``; tests emulate one on the CPU); ``mutated``: the
    inputs the graph writes in place; ``warn`` shows a once-only warning."""

    def __init__(
        self,
        compiled: Callable[[list[Any]], Any],
        mutated: frozenset[int],
        strict: bool,
        warn: Warn,
        graph_factory: Callable[[], Graph] | None = None,
    ) -> None:
        self._boxed_call = True  # an instance attribute: see _EagerAfterFirstFailure
        self.compiled = compiled
        self.mutated = mutated
        self.strict = strict
        self.warn = warn
        self.graph_factory = graph_factory or _CudaGraph
        self.state = "warmup"  # then "replay", or "direct" once refused
        self.captures = 0
        self.first_layouts: list[tuple | None] = []
        self.static: set[int] = set()  # inputs the graph reads in place
        self._lock = threading.Lock()
        self._reset_capture()

    def _reset_capture(self) -> None:
        self.graph: Graph | None = None
        # per input: the static buffer of a copied tensor, the value of a non-tensor, None
        # for a static tensor (not kept alive here: each call checks its address instead)
        self.buffers: list[Any] = []
        self.outputs: Any = None
        self.plan: list[tuple] = []  # per output: how to hand it out
        self.static_ptrs: list[tuple[int, int]] = []  # (input, its captured address)
        self.copied: list[int] = []  # tensor inputs read through self.buffers
        self.values: list[int] = []  # non-tensor inputs, compared with self.buffers

    # ---- calls
    def __call__(self, args: list[Any]) -> Any:
        with self._lock:
            if self.state == "direct" or self._capturing():
                return self.compiled(args)
            if self.state == "warmup":
                return self._warm_up(args)
            if self.graph is None:
                return self._capture(args)
            return self._replay(args)

    @staticmethod
    def _capturing() -> bool:
        return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()

    def _device(self, args: Sequence[Any]) -> Any:
        return next((a.device for a in args if isinstance(a, torch.Tensor)), None)

    def _warm_up(self, args: list[Any]) -> Any:
        self.first_layouts = [_layout(a) if isinstance(a, torch.Tensor) else None for a in args]
        self.static = {i for i, lay in enumerate(self.first_layouts) if lay is not None}
        out = _run_on_side_stream(self.compiled, list(args), self._device(args))
        args.clear()
        if getattr(self.compiled, "running_eagerly", False):
            self._fall_back("the compiled graph failed on its first call and runs eagerly")
        else:
            self.state = "replay"
        return out

    def _fall_back(self, reason: str, cause: BaseException | None = None) -> None:
        self.state = "direct"
        self._reset_capture()
        try:
            refuse(reason, self.strict, self.warn)
        except CudaGraphsRefused as exc:
            raise exc from cause

    def _capture(self, args: list[Any]) -> Any:
        """Capture with this call's inputs (static where their layout did not change since
        the warm-up, else copied into fresh buffers), then replay for this call."""
        if self.captures > len(args):
            self._fall_back("input addresses keep changing (each change needs a new capture)")
            return self.compiled(args)
        self.static = {
            i for i in self.static if _layout(args[i]) == self.first_layouts[i]
        }  # fmt: skip
        buffers: list[Any] = []
        for i, a in enumerate(args):
            if not isinstance(a, torch.Tensor) or i in self.static:
                buffers.append(a)
            else:
                buf = torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device)
                _writable(buf).copy_(_writable(a))
                buffers.append(buf)
        graph = self.graph_factory()
        device = self._device(args)
        try:
            with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
                outputs = graph.capture(self.compiled, list(buffers))
        except Exception as exc:
            log.debug("tilefuse: CUDA graph capture failed", exc_info=True)
            self._fall_back(f"capturing it failed ({_describe(exc)})", exc)
            return self.compiled(args)
        counters.bump("cuda_graphs_captured")
        self.captures += 1
        self.graph, self.outputs = graph, outputs
        self.plan = self._plan_outputs(outputs, buffers)
        self.buffers = [None if i in self.static else b for i, b in enumerate(buffers)]
        self.static_ptrs = [(i, args[i].data_ptr()) for i in sorted(self.static)]
        tensors = {i for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
        self.copied = sorted(tensors - self.static)
        self.values = [i for i in range(len(args)) if i not in tensors]
        return self._replay(args)

    def _plan_outputs(self, outputs: Any, buffers: list[Any]) -> list[tuple]:
        """Per output: ``("value",)`` for a non-tensor, ``("input", i, delta)`` for a view
        of input ``i`` (``delta``: its offset from the input's), else ``("copy", k)``: the
        ``k``-th distinct output storage, copied once per call. ``buffers``: the inputs the
        graph was captured with."""
        inputs = {
            b.untyped_storage().data_ptr(): i
            for i, b in enumerate(buffers)
            if isinstance(b, torch.Tensor) and b.untyped_storage().nbytes()
        }
        storages: dict[int, int] = {}
        plan: list[tuple] = []
        for out in outputs:
            if not isinstance(out, torch.Tensor):
                plan.append(("value",))
                continue
            ptr = out.untyped_storage().data_ptr()
            if ptr in inputs and out.untyped_storage().nbytes():
                i = inputs[ptr]
                plan.append(("input", i, out.storage_offset() - buffers[i].storage_offset()))
            else:
                plan.append(("copy", storages.setdefault(ptr, len(storages))))
        return plan

    def _replay(self, args: list[Any]) -> Any:
        """Per call, only what can change under Dynamo's guards (which hold every input's
        sizes, strides, dtype and device for this graph): the address of each static
        input, compared as plain integers because a model passes hundreds of parameters,
        then the copied inputs' shapes and the non-tensor values."""
        assert self.graph is not None
        for i, ptr in self.static_ptrs:
            if args[i].data_ptr() != ptr:
                # A "static" input moved: read it through a copy from now on.
                self.static.discard(i)
                self.first_layouts[i] = None
                self._reset_capture()
                return self._capture(args)
        for i in self.copied:
            a, buf = args[i], self.buffers[i]
            if a.shape != buf.shape or a.dtype != buf.dtype:
                return self._run_directly(args, f"input {i} changed shape or dtype")
        for i in self.values:
            if args[i] != self.buffers[i]:
                return self._run_directly(args, f"non-tensor argument {i} changed")
        for i in self.copied:
            _writable(self.buffers[i]).copy_(_writable(args[i]))
        self.graph.replay()
        counters.bump("cuda_graph_replays")
        for i in self.mutated:
            if i not in self.static and isinstance(args[i], torch.Tensor):
                _writable(args[i]).copy_(_writable(self.buffers[i]))
        out = self._hand_out(args)
        args.clear()
        return out

    def _run_directly(self, args: list[Any], why: str) -> Any:
        self.warn(
            f"a CUDA-graph call ran without its graph: {why} since the capture "
            "(this call only; the graph is kept)"
        )
        return self.compiled(args)

    def _hand_out(self, args: list[Any]) -> Any:
        copies: dict[int, Any] = {}
        result: list[Any] = []
        for out, how in zip(self.outputs, self.plan):
            if how[0] == "value":
                result.append(out)
            elif how[0] == "input":
                src = args[how[1]]
                result.append(_view_on(src.untyped_storage(), out, src.storage_offset() + how[2]))
            else:
                storage = copies.get(how[1])
                if storage is None:
                    storage = copies[how[1]] = out.untyped_storage().clone()
                result.append(_view_on(storage, out, out.storage_offset()))
        return type(self.outputs)(result) if isinstance(self.outputs, tuple) else result


def shape_signature(args: Sequence[Any]) -> tuple:
    """What tells one shape of a symbolic-size graph's call from another: the sizes and
    dtype of each tensor argument and the value of each integer one (Dynamo passes the
    symbolic sizes as integers); other values are left to the runner's own check."""
    return tuple(
        (tuple(a.shape), a.dtype)
        if isinstance(a, torch.Tensor)
        else a
        if isinstance(a, int)
        else None
        for a in args
    )


class ShapeRunners:
    """CUDA graphs for a graph compiled for every size: a ``CudaGraphRunner`` per
    ``shape_signature``, at most ``max_shapes`` (>= 1) of them, least recently used
    dropped first (``cuda_graphs_evicted``; one warning through ``warn``). Called boxed,
    like the runners. ``runner_factory()`` makes a runner (tests pass one with an
    emulated graph). Once a runner is refused (its state ``"direct"``, counted once by
    the runner), the graph runs without CUDA graphs for every shape."""

    def __init__(
        self,
        runner_factory: Callable[[], CudaGraphRunner],
        compiled: Callable[[list[Any]], Any],
        max_shapes: int,
        warn: Warn,
    ) -> None:
        self._boxed_call = True
        self.runner_factory = runner_factory
        self.compiled = compiled
        self.warn = warn
        self.runners: BoundedLRU[tuple, CudaGraphRunner] = BoundedLRU(max_shapes)
        self.direct = False
        self._lock = threading.Lock()

    def __call__(self, args: list[Any]) -> Any:
        if CudaGraphRunner._capturing():
            # A user's own capture records the compiled graph: no runner is made for it
            # (one would push a captured shape out of the LRU for nothing).
            return self.compiled(args)
        key = shape_signature(args)
        with self._lock:
            if self.direct:
                runner = None
            else:
                runner = self.runners.get(key)
                evicted = 0
                if runner is None:
                    runner = self.runner_factory()
                    evicted = self.runners.put(key, runner)
        if runner is None:
            return self.compiled(args)
        if evicted:
            counters.bump("cuda_graphs_evicted", evicted)
            self.warn(
                f"a CUDA-graph graph with symbolic sizes was called with more than "
                f"{self.runners.limit} input shapes; the least recently used shape's graph "
                "is dropped and captured again when that shape returns (raise "
                "TILEFUSE_MAX_SPECIALIZATIONS or options={'max_specializations': N} to keep more)"
            )
        try:
            return runner(args)
        finally:
            if runner.state == "direct":
                with self._lock:
                    self.direct = True
                    self.runners.clear()


def _symbolic(example_inputs: Sequence[Any]) -> bool:
    """Whether any example input has a symbolic size or is a symbolic integer."""
    for value in example_inputs:
        if isinstance(value, torch.SymInt):
            return True
        if isinstance(value, torch.Tensor) and any(
            isinstance(s, torch.SymInt) for s in value.shape
        ):
            return True
    return False


def wrap(
    compiled: Callable[[list[Any]], Any],
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    strict: bool,
    warn: Warn,
    max_shapes: int | None = None,
) -> Callable[[list[Any]], Any]:
    """``compiled`` run under CUDA graphs, or ``compiled`` itself after ``refuse`` where
    the graph cannot be captured (``CudaGraphsRefused`` with ``strict``).

    A graph with symbolic sizes gets a ``ShapeRunners`` keeping at most ``max_shapes``
    captured shapes (default ``config.max_specializations()``); any other graph one
    ``CudaGraphRunner``."""
    reason = refusal_reason(gm, example_inputs)
    if reason is not None:
        refuse(reason, strict, warn)
        return compiled
    mutated = mutated_inputs(gm)
    if not _symbolic(example_inputs):
        return CudaGraphRunner(compiled, mutated, strict, warn)
    limit = config.max_specializations() if max_shapes is None else max_shapes
    return ShapeRunners(
        lambda: CudaGraphRunner(compiled, mutated, strict, warn), compiled, limit, warn
    )
