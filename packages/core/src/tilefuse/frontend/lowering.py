"""Walk an aten FX graph and lower each node to IR through the lowering registry.

``register(*targets)`` adds a lowering: a function ``(ctx, node, *args, **kwargs)``
returning a ``Value`` (or a tuple of them) where ``args`` hold ``Value`` objects
in place of tensors. A lowering may raise ``Unsupported`` for inputs it cannot
handle; the node then becomes an ``Extern`` (an eager call), logged once per op.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections.abc import Callable, Sequence
from typing import Any

import sympy
import torch
import torch.fx

from .. import config, plugin
from ..errors import Unsupported
from ..ir.graph import LoweredGraph
from ..ir.index import simplify_index, stride_of
from ..ir.nodes import (
    Buffer,
    Extern,
    Layout,
    Pointwise,
    Template,
    View,
    contiguous_strides,
    dense_strides_like,
    index_symbols,
    overlaps,
    product,
    sympify_sizes,
    sympify_strides,
)
from ..ir.ops import trace_reads
from ..ir.symbolic import hint_of, is_symbolic_value, known_nonnegative, size_expr, size_hints
from .gemm_rows import operand_rows
from .layout_choice import (
    GraphLayout,
    channels_last_compatible,
    channels_last_strides,
    is_channels_last,
    is_training_graph,
)
from .values import BufferValue, LazyValue, Value

log = logging.getLogger("tilefuse")
aten = torch.ops.aten

Lowering = Callable[..., Any]
LOWERINGS: dict[Any, Lowering] = {}
_logged_externs: set[str] = set()
_warned_unserved: set[str] = set()


# A lazy body used by more than one consumer is realized (the scheduler can fuse
# it back); one that grows beyond this many ops is realized to bound recompute.
MAX_INLINE_OPS = 96
# ... except index math that loads nothing (``arange``, ``full``, masks built from
# them) of at most this many ops: each consumer recomputes it, in registers, instead
# of a kernel writing it and every consumer gathering from it. A body that is one load
# (a view: transposed, reshaped, sliced or expanded) is never realized for sharing:
# a copy would cost a kernel and the same reads.
MAX_RECOMPUTED_OPS = 16
# ... and a shared body of loads, casts and at most this many of these ops, over one
# full-size buffer and small ones (``GraphLowering._cheap_to_recompute``), is recomputed
# by each consumer.
MAX_CHEAP_OPS = 2
CHEAP_OPS = frozenset({"add", "sub", "mul", "neg"})


def register(*targets: Any) -> Callable[[Lowering], Lowering]:
    """Register a lowering for aten overloads or overload packets."""

    def wrap(fn: Lowering) -> Lowering:
        for t in targets:
            LOWERINGS[t] = fn
        return fn

    return wrap


def find_lowering(target: Any) -> Lowering | None:
    if target in LOWERINGS:
        return LOWERINGS[target]
    packet = getattr(target, "overloadpacket", None)
    return LOWERINGS.get(packet)


# Ops that read only their tensor argument's size, dtype and device: a value they take is
# not shared with them (it stays inlined into its one real reader).
_READS_ONLY_METADATA = frozenset({
    aten.rand_like.default, aten.empty_like.default, aten.zeros_like.default,
    aten.ones_like.default, aten.full_like.default,
})  # fmt: skip


def op_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


class GraphLowering:
    """Lowers one aten-level ``GraphModule`` for its example inputs.

    The inputs may have symbolic sizes (fake tensors with ``torch.SymInt`` sizes, and
    ``SymInt`` arguments): sizes then stay sympy expressions over Dynamo's size symbols
    (``ir.symbolic``), each with its hint (``size_hints``), and a node that computes a
    size (``sym_size``, arithmetic on sizes) lowers to its expression. Nothing here asks
    torch for a symbolic size's value, which would add a shape guard.
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        example_inputs: Sequence[Any],
        free_outputs: frozenset[int] = frozenset(),
        padded_outputs: bool = False,
    ) -> None:
        """``free_outputs``: indices of graph outputs whose strides may differ from eager's
        (activations saved for a backward graph that is compiled for the strides this
        graph reports); every other output keeps eager's strides, except that with
        ``padded_outputs`` a GEMM result or operand whose rows were padded for cuBLAS
        (``gemm_rows``) and that is saved for the backward (never the caller's)
        keeps those rows, not copied dense: eager's stride order, its row stride rounded
        up to 16 bytes. The caller always gets eager's strides (``view(-1)`` works)."""
        self.gm = gm
        self.example_inputs = list(example_inputs)
        self.size_hints = size_hints(self.example_inputs)
        self.scalars: dict[int, Any] = {}  # input index -> expression of a SymInt input
        self.buffers: list[Buffer] = []
        self.inputs: list[Buffer | None] = []
        self.externs: dict[str, str] = {}
        self.constants: dict[str, torch.Tensor] = {}
        self._counter = 0
        self._current: torch.fx.Node | None = None
        self._served: frozenset[str] | None = None  # device types backends serve here
        self._by_name: dict[str, Buffer] = {}
        # lazy values realized as operands of externs and templates: (value, buffer) by id
        self._operands: dict[int, tuple[Value, Buffer]] = {}
        # Buffers laid out channels-last where eager's tensor is contiguous: name -> eager's
        # layout (what ``as_strided`` offsets into such a buffer mean).
        self.relaid: dict[str, Layout] = {}
        self._nhwc_copies: dict[str, Buffer] = {}  # buffer name -> its channels-last copy
        # Channels-last with symbolic sizes is not built yet: such graphs keep eager's layout.
        setting = "off" if self.size_hints else config.channels_last()
        training = is_training_graph(gm, free_outputs)
        self.layout = GraphLayout.decide(gm, setting, _device_prefers, training)
        # Only a channels-last graph has a reason to return other strides than eager's.
        self.free_outputs = free_outputs if self.layout.channels_last else frozenset()
        self.saved_outputs = free_outputs  # never handed to the user: views may share
        self._returned: set[str] = set()  # buffers the user gets (or views of them)
        self._output_values: dict[int, tuple[Value, Any]] = {}  # id -> (value, output)
        self.padded_outputs = padded_outputs
        self._split_setting = config.split_reductions()
        self._split_devices: dict[str, bool] = {}  # device type -> splits reductions
        # (device type, capability, node kinds) -> whether those kinds' owners declare it
        self._owner_caps: dict[tuple[str, str, tuple[str, ...]], bool] = {}
        self._env: dict[torch.fx.Node, Any] = {}

    def hint(self, expr: Any) -> int:
        """``expr`` (a size) at the example inputs' sizes: for heuristics only, never for a
        decision whose result is wrong at another size."""
        return hint_of(expr, self.size_hints)

    def splits_reductions(self, device: torch.device) -> bool:
        """Whether long reductions with few outputs on ``device`` may be lowered in two
        stages: ``config.split_reductions()`` is ``"on"``, or ``"auto"`` and a backend
        serving the device declares ``plugin.CAP_SPLIT_REDUCTIONS``."""
        if self._split_setting != "auto":
            return self._split_setting == "on"
        device_type = torch.device(device).type
        if device_type not in self._split_devices:
            from ..backend_selection import declares

            self._split_devices[device_type] = declares(device_type, plugin.CAP_SPLIT_REDUCTIONS)
        return self._split_devices[device_type]

    def generates_random(self, device: torch.device) -> bool:
        """Whether kernels on ``device`` may draw random numbers (``ops.rand``): the
        backends owning its pointwise and its reduction kernels both declare
        ``plugin.CAP_RANDOM``."""
        kinds = (plugin.CAP_POINTWISE, plugin.CAP_REDUCTION)
        return self._owners_declare(device, plugin.CAP_RANDOM, kinds)

    def reductions_render(self, device: torch.device, capability: str) -> bool:
        """Whether the backend owning reductions on ``device`` declares ``capability``
        (a reduction type beyond the required ones: ``plugin.CAP_SOFTMAX_SUM``)."""
        return self._owners_declare(device, capability, (plugin.CAP_REDUCTION,))

    def _owners_declare(
        self, device: torch.device, capability: str, kinds: tuple[str, ...]
    ) -> bool:
        key = (torch.device(device).type, capability, kinds)
        if key not in self._owner_caps:
            from ..backend_selection import owners_declare

            self._owner_caps[key] = owners_declare(key[0], capability, kinds)
        return self._owner_caps[key]

    def value_of(self, node: torch.fx.Node) -> Any:
        """The lowered value of a node already walked (for lowerings that look past
        their arguments at the nodes that made them)."""
        return self._env[node]

    def random_seed(self, device: torch.device) -> BufferValue:
        """A fresh seed for one random op's kernels: a one-element int64 tensor on
        ``device`` drawn per call from torch's default generator there (an eager
        ``randint``), so ``torch.manual_seed`` makes the numbers repeat, and each call of
        the graph, like each eager call, draws new ones."""
        reason = "the seed of random numbers generated inside kernels"
        self.externs.setdefault(op_name(aten.randint.low), reason)
        layout = Layout.contiguous(torch.device(device), torch.int64, [1])
        kwargs = {"dtype": torch.int64, "device": torch.device(device)}
        meta = torch.empty(1, dtype=torch.int64)  # sizes nothing: ``layout`` is given
        return self.extern_call(aten.randint.low, (0, 2**62, [1]), kwargs, meta, reason, layout)

    # -- buffers ---------------------------------------------------------------------
    def new_name(self, prefix: str = "buf") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def add_buffer(self, layout: Layout, data: Any, **extra: Any) -> Buffer:
        buf = Buffer(self.new_name(), layout, data, **extra)
        if self._current is not None:
            buf.origins.append(self._current.name)
        self.buffers.append(buf)
        self._by_name[buf.name] = buf
        return buf

    def buffer_named(self, name: str) -> Buffer | None:
        return self._by_name.get(name)

    def realize(self, value: Value) -> Buffer:
        """The buffer holding ``value``, creating a pointwise node when it is lazy.

        Its strides are ``value.stride_hint`` (eager's, where they are not contiguous);
        otherwise, in a channels-last graph, channels-last when the body reads a
        channels-last buffer element for element (``inherits_channels_last``); otherwise
        contiguous.
        """
        if isinstance(value, BufferValue):
            return value.buffer
        assert isinstance(value, LazyValue), value
        layout = Layout.contiguous(value.device, value.dtype, value.size)
        relaid = False
        if value.stride_hint is not None:
            layout = Layout(value.device, value.dtype, layout.size, value.stride_hint)
        elif self.layout.channels_last and self.inherits_channels_last(value):
            layout = Layout(
                value.device, value.dtype, layout.size, channels_last_strides(layout.size)
            )
            relaid = True
        buf = self.add_buffer(layout, Pointwise(layout.size, value.fn))
        if relaid:
            self.relaid[buf.name] = Layout.contiguous(value.device, value.dtype, value.size)
        _add_origins(buf, value.origins)
        return buf

    def inherits_channels_last(self, value: LazyValue) -> bool:
        """Whether the 4-D ``value`` reads a channels-last buffer with as many channels
        along its own channel dim (unit stride in the channel index): an elementwise
        consumer (batch norm, an activation, a residual add) or a pooling window."""
        if value.rank != 4:
            return False
        syms = index_symbols("cl", 4)
        for name, index in trace_reads(value.fn, syms).reads:
            buf = self.buffer_named(name)
            if buf is None or buf.layout.size[1:2] != value.size[1:2]:
                continue
            if not is_channels_last(buf.layout.size, buf.layout.stride):
                continue
            if stride_of(sympy.expand(index), syms[1]) == 1:
                return True
        return False

    def channels_last_buffer(self, value: Value) -> Buffer:
        """``value`` realized in channels-last strides (what a channels-last convolution
        reads): as it is when it already is, else written there by a pointwise copy."""
        if isinstance(value, LazyValue):
            # A copy: other consumers may share ``value`` (a view stays lazy) and keep
            # eager's strides for it.
            relaid = dataclasses.replace(value, stride_hint=channels_last_strides(value.size))
            return self.realize(relaid)
        buf = self.realize(value)
        if channels_last_compatible(buf.layout.size, buf.layout.stride):
            return buf
        if buf.name not in self._nhwc_copies:  # one copy, however many convolutions read it
            size = buf.layout.size
            layout = Layout(buf.device, buf.dtype, size, channels_last_strides(size))
            copy = self.add_buffer(layout, Pointwise(size, BufferValue(buf).load))
            self._nhwc_copies[buf.name] = copy
        return self._nhwc_copies[buf.name]

    def realized_value(self, value: Value) -> BufferValue:
        return value if isinstance(value, BufferValue) else BufferValue(self.realize(value))

    # -- walking ---------------------------------------------------------------------
    def run(self) -> LoweredGraph:
        env = self._env
        inputs = iter(self.example_inputs)
        outputs: list[Any] = []
        for node in self.gm.graph.nodes:
            self._current = node
            if node.op == "placeholder":
                env[node] = self._placeholder(node, next(inputs))
            elif node.op == "call_function":
                env[node] = self._call(node, env)
            elif node.op == "output":
                metas = [getattr(n, "meta", {}).get("val") for n in _flatten_nodes(node.args[0])]
                values = _flatten_output(node.args[0], env)
                outputs = [
                    self._output(v, m, i in self.free_outputs, i in self.saved_outputs)
                    for i, (v, m) in enumerate(zip(values, metas))
                ]
            elif node.op == "get_attr":
                env[node] = self._constant(node)
        self._current = None
        return LoweredGraph(
            self.inputs, self.buffers, outputs, dict(self.externs), self.constants,
            scalars=dict(self.scalars), size_hints=dict(self.size_hints),
        )  # fmt: skip

    def _placeholder(self, node: torch.fx.Node, example: Any) -> Any:
        if not isinstance(example, torch.Tensor):
            if is_symbolic_value(example):
                value = size_expr(example)  # a SymInt argument (an input's size)
                self.scalars[len(self.inputs)] = value
                example = value
            self.inputs.append(None)
            return example
        layout = Layout(
            example.device,
            example.dtype,
            sympify_sizes(example.shape),
            sympify_strides(example.stride()),
            sympy.Integer(0),
        )
        buf = Buffer(f"arg{len(self.inputs)}", layout)
        buf.origins.append(node.name)
        self.inputs.append(buf)
        self._by_name[buf.name] = buf
        return BufferValue(buf)

    def _constant(self, node: torch.fx.Node) -> Any:
        value = self.gm
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            return value
        name = f"const_{len(self.constants)}"
        self.constants[name] = value
        return BufferValue(Buffer(name, Layout.of_result(value)))

    def _output(self, value: Any, meta: Any, free: bool = False, saved: bool = False) -> Any:
        """``_output_buffer``, once per value: a graph returning one node twice (a
        log_softmax returned and saved for the backward) returns one buffer twice, as
        eager returns one tensor, instead of writing it twice."""
        kept = self._output_values.get(id(value)) if isinstance(value, LazyValue) else None
        if kept is not None:
            return kept[1]
        result = self._output_buffer(value, meta, free, saved)
        if isinstance(value, LazyValue):
            self._output_values[id(value)] = (value, result)
        if not saved and isinstance(result, Buffer):
            base = result.data.base if isinstance(result.data, View) else result
            self._returned.update((result.name, base.name))
        return result

    def _output_buffer(self, value: Any, meta: Any, free: bool, saved: bool) -> Any:
        """Graph outputs keep the strides eager would give them: the backward graph
        (and the user) may rely on them. A ``free`` one (``free_outputs``) keeps the
        layout it was computed in; with ``padded_outputs``, a saved GEMM result with
        padded rows keeps them (eager's stride order: no copy). A
        ``saved`` one (an activation for the backward graph, never the user's) may be a
        view of an intermediate buffer where eager's is a copy of it (a clone)."""
        if free and isinstance(value, Value):
            buf = self.realize(value)
            # A computed operand of a channels-last convolution (an autocast weight cast):
            # the backward's convolution reads it channels-last again, so save that copy.
            # (A graph input stays itself: what AOTAutograd knows it aliases.)
            return buf if buf.is_input() else self._nhwc_copies.get(buf.name, buf)
        if isinstance(value, LazyValue) and isinstance(meta, torch.Tensor):
            view = self.strided_view(value, through_copies=saved)
            eager = Layout.of_tensor(meta)
            padded = None
            if view is not None and self.padded_outputs and saved:
                padded = _rows_padded(view.layout, eager)
            if view is not None and padded is not None:
                view.layout = padded  # a reshape of a padded GEMM result: rows stay padded
                return view
            if view is not None and _same_window(view.layout, eager):
                # Eager returns a view here; so do we, so that outputs viewing one
                # intermediate keep sharing its memory as they do in eager (and a
                # reshape of a GEMM result costs no copy). Size-1 dims take eager's strides.
                view.layout = Layout(
                    view.device, view.dtype, view.layout.size, eager.stride, view.layout.offset
                )
                return view
            if tuple(eager.size) == tuple(value.size):
                layout = Layout(eager.device, value.dtype, eager.size, eager.stride)
                buf = self.add_buffer(layout, Pointwise(layout.size, value.fn))
                _add_origins(buf, value.origins)
                return buf
        if isinstance(value, BufferValue) and isinstance(meta, torch.Tensor):
            buf = value.buffer
            want = sympify_strides(meta.stride())
            numel = product(sympify_sizes(meta.shape))
            one = numel.is_Integer and numel <= 1
            eager = Layout.of_tensor(meta)
            padded = _rows_padded(buf.layout, eager) if self.padded_outputs and saved else None
            if (
                not buf.is_input()
                and not one
                and tuple(buf.layout.stride) != want
                and padded is None
            ):
                layout = Layout(buf.device, buf.dtype, buf.layout.size, want)
                return self.add_buffer(layout, Pointwise(layout.size, value.load))
        if isinstance(value, Value):
            return self.realize(value)
        return value

    def _call(self, node: torch.fx.Node, env: dict[torch.fx.Node, Any]) -> Any:
        meta = node.meta.get("val")
        if is_symbolic_value(meta):  # a size computation: its expression (no kernel)
            return size_expr(meta)
        args: Any = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.target is operator.getitem:
            # One output of a multi-output lowering: realized when shared, like any value.
            return self._maybe_realize(node, args[0][args[1]])
        lowering = find_lowering(node.target)
        result = None
        device_problem = self._device_problem(node, args, kwargs)
        if device_problem is not None:
            result = self.extern(node, args, kwargs, device_problem)
        elif lowering is not None and (problem := _dtype_problem(node, args, kwargs)):
            # Kernels have no such type: eager computes it, inside the graph.
            result = self.extern(node, args, kwargs, problem)
        elif lowering is not None:
            try:
                result = lowering(self, node, *args, **kwargs)
            except Unsupported as exc:
                result = self.extern(node, args, kwargs, f"lowering declined: {exc}")
        else:
            result = self.extern(node, args, kwargs, "no lowering")
        if isinstance(result, LazyValue):
            result.origins = _inlined_origins(node, result, env)
        return self._maybe_realize(node, result)

    def _device_problem(self, node: torch.fx.Node, args: Any, kwargs: Any) -> str | None:
        """Why ``node`` cannot become kernel code, from where its tensors live, or ``None``.

        A kernel runs on one device: a node whose tensors span devices (CPU index tensors
        with CUDA data, say) runs eagerly. So does a node on a device no backend serves,
        when backends serve another device on this machine (a CPU side graph of a CUDA
        program: one warning per device type). Where no backend serves anything, the graph
        is left alone: compiling it raises ``NoBackendError`` (eager fallback).
        """
        devices = _devices_of((args, kwargs, node.meta.get("val")))
        if len(devices) > 1:
            names = ", ".join(sorted(str(d) for d in devices))
            return f"its tensors are on several devices ({names}): eager moves between them"
        if not devices:
            return None
        device_type = next(iter(devices)).type
        if self._served is None:
            from ..backend_selection import served_device_types

            self._served = served_device_types()
        if device_type in self._served or not self._served:
            return None
        if device_type not in _warned_unserved:
            _warned_unserved.add(device_type)
            log.warning(
                "tilefuse: no backend serves %s tensors on this machine (served: %s); "
                "their ops run eagerly inside compiled graphs. `tilefuse backends` lists why.",
                device_type, ", ".join(sorted(self._served)),
            )  # fmt: skip
        return f"no backend serves {device_type} tensors on this machine"

    def _maybe_realize(self, node: torch.fx.Node, result: Any) -> Any:
        meta = node.meta.get("val")
        if isinstance(result, LazyValue) and isinstance(meta, torch.Tensor):
            if sympify_sizes(meta.shape) == tuple(result.size):
                stride = sympify_strides(meta.stride())
                if not _contiguous(result.size, stride):
                    # Eager's order, without the gaps of a view into a larger tensor.
                    result.stride_hint = dense_strides_like(result.size, stride)
        if isinstance(result, LazyValue):
            padded = operand_rows(node, self.size_hints)
            if padded is not None and tuple(result.size) == sympify_sizes(meta.shape):
                # A GEMM operand with rows cuBLAS aligns (a copy: ``alias`` and ``view``
                # hand on their input's own value object, which others may realize).
                return BufferValue(self.realize(dataclasses.replace(result, stride_hint=padded)))
            if result.cost() > MAX_INLINE_OPS:
                return BufferValue(self.realize(result))
            readers = [u for u in node.users if u.target not in _READS_ONLY_METADATA]
            shared = len(readers) > 1 and result.cost() > 1
            if shared and (result.read_names() or result.cost() > MAX_RECOMPUTED_OPS):
                # (readers that take buffers share one copy: ``operand_buffer``)
                if not self._cheap_to_recompute(result):
                    return BufferValue(self.realize(result))
        return result

    def _cheap_to_recompute(self, value: LazyValue) -> bool:
        """Whether each consumer may compute ``value`` again rather than read a realized
        copy: a few cheap ops over one buffer of ``value``'s size and elements no wider,
        plus loads of buffers at most an eighth of that size (``x.float()`` of a bf16
        tensor, ``x - rowmax``). Recomputing reads no more bytes than the copy would, and
        the copy's write is saved."""
        if value.cost() > MAX_INLINE_OPS:
            return False
        try:
            tracer = trace_reads(value.fn, index_symbols("c", value.rank))
        except Exception:  # a body that needs real index values (an indirect read)
            return False
        arithmetic = [n for n in tracer.op_names if n != "to_dtype"]
        if not set(arithmetic) <= CHEAP_OPS or len(arithmetic) > MAX_CHEAP_OPS:
            return False
        numel = self.hint(product(value.size))
        full = 0
        for name, _ in tracer.reads:
            buf = self.buffer_named(name)
            if buf is None:
                return False
            size = self.hint(product(buf.layout.size))
            if size == numel and buf.dtype.itemsize <= value.dtype.itemsize:
                full += 1
            elif 8 * size > numel:
                return False
        return full == 1

    # -- externs ---------------------------------------------------------------------
    def extern(self, node: torch.fx.Node, args: Any, kwargs: Any, reason: str) -> Any:
        """Run ``node``'s op eagerly inside the compiled graph."""
        self.note_extern(node, reason)

        # A copy of a buffer is read in place only by an op that neither writes its
        # arguments nor returns a view of one (``diagonal`` of a clone must not see, or
        # hand out, the clone's source).
        through_copies = _reads_only(node.target)

        def to_buffer(x: Any) -> Any:
            # A view of a buffer (the q/k/v heads of a fused projection, say) is passed
            # as the strided window eager passes, not copied.
            if not isinstance(x, Value):
                return x
            return self.operand_buffer(x, through_copies)

        eargs = _map_values(args, to_buffer)
        ekwargs = _map_values(kwargs, to_buffer)
        meta = node.meta.get("val")
        if meta is None:
            data = Extern(node.target, tuple(eargs), dict(ekwargs), reason)
            if data.returns_nothing():  # run for its effect (a check): no output to size
                self.add_buffer(Layout.contiguous(torch.device("cpu"), torch.int8, [0]), data)
                return None
            raise Unsupported(f"{op_name(node.target)} has no example value to size its output")
        return self.extern_call(node.target, eargs, ekwargs, meta, reason)

    def note_extern(self, node: torch.fx.Node, reason: str) -> None:
        """Record (for the report) and log once that ``node``'s op runs eagerly."""
        name = op_name(node.target)
        self.externs.setdefault(name, reason)
        if name not in _logged_externs:
            _logged_externs.add(name)
            log.info("tilefuse: %s runs as an extern (eager) call: %s", name, reason)

    def extern_call(
        self,
        op: Any,
        args: Any,
        kwargs: Any,
        meta: Any,
        reason: str = "",
        layout: Layout | Sequence[Layout | None] | None = None,
    ) -> Any:
        """An ``Extern`` buffer for ``op(*args, **kwargs)`` sized by ``meta``, laid out as
        ``layout`` where given (a ``Layout`` for one tensor output, one entry per output
        for several; the wrapper copies a result of other strides into it), else as
        ``meta`` is."""
        data = Extern(op, tuple(args), dict(kwargs), reason)
        if isinstance(meta, torch.Tensor):
            single = layout if isinstance(layout, Layout) else None
            return BufferValue(self.add_buffer(single or _extern_result_layout(meta), data))
        if isinstance(meta, (list, tuple)):
            parent = self.add_buffer(Layout.contiguous(torch.device("cpu"), torch.int8, [0]), data)
            outs: list[Any] = []
            for i, m in enumerate(meta):
                if isinstance(m, torch.Tensor):
                    chosen = layout[i] if isinstance(layout, (list, tuple)) else None
                    child_layout = chosen or _extern_result_layout(m)
                    child = self.add_buffer(child_layout, None, output_of=(parent, i))
                    outs.append(BufferValue(child))
                else:
                    outs.append(m)
            return tuple(outs)
        raise Unsupported(f"extern with non-tensor output {type(meta).__name__}")

    def template(
        self, op: str, inputs: Sequence[Value], meta: torch.Tensor, layout: Layout | None = None
    ) -> BufferValue:
        """A ``Template`` node for ``op`` on ``inputs``, laid out as ``layout`` where given,
        else as eager lays out ``meta``."""
        bufs = tuple(self.operand_buffer(v) for v in inputs)
        return BufferValue(self.add_buffer(layout or Layout.of_result(meta), Template(op, bufs)))

    def operand_buffer(self, value: Value, through_copies: bool = True) -> Buffer:
        """``value`` as a buffer that an extern call or a template reads (and never
        writes): a strided view where it re-strides a buffer (or, with
        ``through_copies``, a copy of one: for readers that return no view of it), else
        the value realized, once for all such readers of the same value."""
        view = self.strided_view(value, through_copies=through_copies)
        if view is not None:
            return view
        if isinstance(value, BufferValue):
            return value.buffer
        kept = self._operands.get(id(value))  # (the value is kept: its id stays unique)
        if kept is None:
            kept = self._operands[id(value)] = (value, self.realize(value))
        return kept[1]

    def strided_view(self, value: Value, through_copies: bool = False) -> Buffer | None:
        """``value`` as a ``View`` buffer when it only re-strides a realized buffer
        (a transposed weight, say), so a template reads it in place instead of a copy.
        ``through_copies``: also when it re-strides a copy of an intermediate buffer
        (``clone``: casts to its own dtype), for readers that never write it and never
        hand it to the user, where sharing the memory cannot be seen."""
        if not isinstance(value, LazyValue):
            return None
        syms = index_symbols("v", value.rank)
        tracer = trace_reads(value.fn, syms)
        if len(tracer.reads) != 1 or tracer.indirect_count:
            return None
        copies = through_copies and all(c == value.dtype for c in tracer.casts)
        if tracer.op_count != 1 + (len(tracer.casts) if copies else 0):
            return None
        name, index = tracer.reads[0]
        # A reshape reads through // and %, which the view's own ranges undo.
        index = simplify_index(index, dict(zip(syms, value.size, strict=True)))
        base = next(
            (b for b in [*self.inputs, *self.buffers] if b is not None and b.name == name), None
        )
        if tracer.casts and base is not None and (base.is_input() or name in self._returned):
            return None  # a copy of what the caller holds stays a copy
        if base is None or base.dtype != value.dtype:
            return None
        strides = [stride_of(index, s) for s in syms]
        if any(st is None or not known_nonnegative(st) for st in strides):
            return None
        offset = index.subs({s: 0 for s in syms})
        if not known_nonnegative(offset):
            return None
        layout = Layout(
            base.device, base.dtype, value.size, tuple(strides), offset + base.layout.offset
        )
        return self.add_buffer(layout, View(base))


def _device_prefers(device_type: str) -> bool:
    from ..backend_selection import declares

    return declares(device_type, plugin.CAP_CHANNELS_LAST)


def _inlined_origins(
    node: torch.fx.Node, result: LazyValue, env: dict[torch.fx.Node, Any]
) -> tuple[str, ...]:
    """``node`` and the nodes of the lazy values it reads: what ``result``'s body inlines."""
    names = list(result.origins)
    for arg in node.all_input_nodes:
        names.extend(getattr(env.get(arg), "origins", ()))
    names.append(node.name)
    return tuple(dict.fromkeys(names))


def _add_origins(buf: Buffer, names: Sequence[str]) -> None:
    buf.origins.extend(n for n in names if n not in buf.origins)


def _contiguous(size: Sequence[Any], stride: Sequence[Any]) -> bool:
    """Whether ``stride`` is the row-major one for ``size`` (size-1 dims may have any)."""
    want = contiguous_strides(size)
    return all(s == 1 or sympy.expand(a - b) == 0 for s, a, b in zip(size, stride, want))


def _extern_result_layout(meta: torch.Tensor) -> Layout:
    """The layout planned for an extern's result: eager's (from the fake run), except
    where two of its indices share an element (a diagonal of an ``expand``): an input we
    realized densely gives the op another result, and the wrapper can only copy that into
    a layout that does not overlap, so such a result is planned dense in eager's order."""
    layout = Layout.of_result(meta)
    if overlaps(layout.size, layout.stride):
        return dataclasses.replace(layout, stride=dense_strides_like(layout.size, layout.stride))
    return layout


def _same_window(view: Layout, eager: Layout) -> bool:
    """Whether a view has the sizes, storage offset and strides eager's output has (the
    stride of a size-1 dim aside: it steps nowhere)."""
    return (
        tuple(view.size) == tuple(eager.size)
        and all(
            size == 1 or a == b
            for size, a, b in zip(view.size, view.stride, eager.stride, strict=True)
        )
        and view.offset == eager.offset
    )


def _reads_only(op: Any) -> bool:
    """Whether ``op``'s schema says it writes no argument and returns no alias of one."""
    schema = getattr(op, "_schema", None)
    if schema is None:
        return False
    return not any(a.alias_info is not None for a in (*schema.arguments, *schema.returns))


def _rows_padded(layout: Layout, eager: Layout) -> Layout | None:
    """``layout`` as eager's row-major ``eager`` with rows longer than they hold (a
    padded GEMM result or operand, or a reshape of one), size-1 dims given the strides of that
    packing; ``None`` when it is not one: other sizes or offset, a last stride other
    than 1, a row stride that is not a static length past the row, or an outer dim not
    packed over the padded rows."""
    size, stride = tuple(layout.size), tuple(layout.stride)
    if len(size) < 2 or size != tuple(eager.size) or layout.offset != eager.offset:
        return None
    if tuple(eager.stride) != contiguous_strides(size) or stride[-1] != 1:
        return None
    row = stride[-2]
    if not (row.is_Integer and size[-1].is_Integer and row > size[-1]):
        return None
    packed = [row, sympy.Integer(1)]
    for n in reversed(size[1:-1]):
        packed.insert(0, packed[0] * n)
    if any(n != 1 and a != b for n, a, b in zip(size, stride, packed, strict=True)):
        return None
    return Layout(layout.device, layout.dtype, layout.size, tuple(packed), layout.offset)


# What kernels compute in: core's default dtypes and bool (not complex, uint16/32/64,
# the float8 types...).
KERNEL_DTYPES = frozenset(plugin.DEFAULT_DTYPES) | {"bool"}


def _dtype_problem(node: torch.fx.Node, args: Any, kwargs: Any) -> str | None:
    """Why ``node``'s tensors (read or produced) have a dtype no kernel computes in, or
    ``None`` when they have none."""
    found: set[torch.dtype] = set()

    def visit(x: Any) -> Any:
        dtype = getattr(x, "dtype", None)
        if isinstance(x, (Value, torch.Tensor)) and isinstance(dtype, torch.dtype):
            if plugin.dtype_name(dtype) not in KERNEL_DTYPES:
                found.add(dtype)
        return x

    _map_values((args, kwargs, node.meta.get("val")), visit)
    if not found:
        return None
    if any(d.is_complex for d in found):
        return "complex tensors run eagerly"
    names = ", ".join(sorted(plugin.dtype_name(d) for d in found))
    return f"{names} tensors run eagerly (no kernel dtype)"


def _devices_of(obj: Any) -> set[torch.device]:
    """The devices of every tensor (or ``Value``) in ``obj``, a nest of lists and dicts."""
    found: set[torch.device] = set()

    def visit(x: Any) -> Any:
        if isinstance(x, (Value, torch.Tensor)):
            found.add(torch.device(x.device))
        return x

    _map_values(obj, visit)
    return found


def _map_values(obj: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_values(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_values(v, fn) for k, v in obj.items()}
    return fn(obj)


def _flatten_nodes(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [n for o in out for n in _flatten_nodes(o)]
    return [out]


def _flatten_output(out: Any, env: dict[torch.fx.Node, Any]) -> list[Any]:
    if isinstance(out, (list, tuple)):
        flat: list[Any] = []
        for o in out:
            flat.extend(_flatten_output(o, env))
        return flat
    if isinstance(out, torch.fx.Node):
        return [env[out]]
    return [out]
