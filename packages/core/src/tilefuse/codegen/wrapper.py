"""The wrapper: a Python module that allocates buffers, launches steps in order and frees.

Memory plan as rendered here: fused-away buffers never appear; a buffer is
deleted right after its last use; a freed kernel-output buffer is handed to the
next allocation with the same device, dtype, sizes and strides; graph inputs and
outputs are never reused.

Symbolic sizes: the Python wrapper of a graph compiled for every size first binds each
size symbol (``s0 = arg0.shape[0]``, or a ``SymInt`` argument) and checks that every
other input size and stride has the value its expression gives (Dynamo's guards make
that so; a mismatch raises ``CompileError`` instead of computing garbage). Buffer sizes,
strides, views and extern arguments are then Python expressions over the symbols,
evaluated per call, and each kernel is passed the values of its ``size_args``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from ..errors import CompileError, SymbolicUnsupported
from ..ir.index import provably_equal_all
from ..ir.nodes import Buffer, View
from ..ir.symbolic import python_expr
from ..scheduler import ExternStep, FusedGroup, Schedule, TemplateStep
from ..scheduler.nodes import buffers_in


@dataclass
class WrapperModule:
    source: str
    namespace: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        exec(compile(self.source, "<tilefuse wrapper>", "exec"), self.namespace)
        return self.namespace["call"]


def _as_strided_from(
    t: torch.Tensor, size: Any, stride: Any, offset_increment: int
) -> torch.Tensor:
    return t.as_strided(size, stride, t.storage_offset() + offset_increment)


def _fast_reinterpret() -> Any:
    """``reinterpret(t, size, stride, offset_increment)``: a tensor over ``t``'s storage
    at ``t``'s storage offset plus ``offset_increment``. PyTorch's private C helper (the
    one Inductor's wrappers use: about half of ``as_strided``'s host time, and no view
    bookkeeping) where this release has it, else ``_as_strided_from`` (the H200's torch 2.11
    took this fallback; the wrapper then writes ``as_strided`` inline, ``WrapperWriter.window``).
    For windows the wrapper only passes to kernels and externs; a returned view keeps
    ``as_strided``."""
    # An attribute, not an import: ``torch._C._dynamo.guards`` is a C submodule that not
    # every release registers in ``sys.modules``.
    guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    _reinterpret_tensor = getattr(guards, "_reinterpret_tensor", None)
    if _reinterpret_tensor is None:
        return _as_strided_from
    # This module is first imported while Dynamo compiles, under its FakeTensorMode: the
    # probe must run on real tensors, or it fails and every call pays ``as_strided``.
    with _real_tensors():
        probe = torch.arange(4.0, device="cpu")
        try:
            ok = _reinterpret_tensor(probe[1:], (2,), (1,), 1).tolist() == [2.0, 3.0]
        except Exception:  # a changed private signature: the public call serves
            ok = False
    return _reinterpret_tensor if ok else _as_strided_from


@contextlib.contextmanager
def _real_tensors() -> Iterator[None]:
    """Factory calls inside make real tensors: no dispatch mode (Dynamo's fake mode, a
    user's mode) and no torch-function mode (a ``with torch.device(...)`` block) of
    whoever is importing."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch._C.DisableTorchFunction():
        yield


_reinterpret = _fast_reinterpret()

# PyTorch's lower-overhead allocators (what Inductor's wrappers call): ``(size, stride,
# dtype)`` on the CPU, or on the current CUDA device. ``None`` where this torch has none.
_GUARDS = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
_EMPTY_STRIDED_FAST = {
    "cpu": getattr(_GUARDS, "_empty_strided_cpu", None),
    "cuda": getattr(_GUARDS, "_empty_strided_cuda", None),
}


def _ensure_layout(
    t: torch.Tensor | None,
    size: tuple,
    stride: tuple,
    op: str = "an extern op",
    dtype: torch.dtype | None = None,
) -> torch.Tensor | None:
    """Extern results must match the layout (and floating ``dtype``) kernels were
    generated for.

    A result with other strides is copied into the planned layout. A floating-point
    result of another floating ``dtype`` is converted in the same copy: an op whose meta
    function and kernel disagree (CPU ``native_layer_norm`` of a bfloat16 input with
    float32 weights returns float32 statistics; its meta says bfloat16) would otherwise
    be read by kernels compiled for the other dtype. Integer results (attention's random
    seeds and offsets) are never converted.

    A result of another shape raises ``CompileError``: the graph was planned from an
    example value that does not hold for this call (an op whose output size depends on
    its inputs' values, sized by fake tensors that ran it on zeros), and a copy would
    broadcast it into wrong values.

    ``None`` passes through: an op may return no tensor where its meta function gave
    one (the unused outputs of the flash-attention kernels on CUDA, say); only
    another extern can consume such an output, and it gets ``None`` as eager would.
    """
    if t is None:
        return None
    if tuple(t.shape) != size:
        raise CompileError(
            f"{op} returned a tensor of shape {tuple(t.shape)} where the graph was compiled "
            f"for {size}: its output size depends on values the compiler could not see. "
            "Run this code without torch.compile (outside strict mode, a graph that fails "
            "on its first call runs eagerly from then on)."
        )
    want = t.dtype
    if dtype is not None and dtype != want and dtype.is_floating_point and want.is_floating_point:
        want = dtype
    if want == t.dtype and (t.numel() <= 1 or tuple(t.stride()) == stride):
        return t
    out = torch.empty_strided(size, stride, dtype=want, device=t.device)
    out.copy_(t)
    return out


def _key(buf: Buffer) -> tuple:
    """What two buffers must share to share memory (sizes as expressions: equal for
    every value of the size symbols)."""
    lay = buf.layout
    return (str(lay.device), lay.dtype, tuple(sympy.expand(s) for s in lay.size),
            tuple(sympy.expand(s) for s in lay.stride))  # fmt: skip


def _inconsistent_sizes(what: str, actual: Any, expected: Any) -> None:
    raise CompileError(
        f"{what} is {actual} where the graph's symbolic sizes give {expected}: the inputs do "
        "not have the shapes this graph was compiled for (a missing guard). Please report "
        "it; run this code with options={'dynamic_sizes': False} meanwhile."
    )


class WrapperPlan:
    """The walk over a schedule that every wrapper language shares: launch order, which
    buffers are allocated, handed a freed buffer's memory, or deleted, and when.

    ``walk()`` calls the hooks below in the order the generated code runs; a subclass
    renders each one in its language. Nothing here re-plans: the decisions come from
    ``Schedule.last_use`` and the pooling rule of this module's docstring, so a Python
    and a C++ wrapper of one schedule allocate, reuse and free exactly alike. A hook
    that assigns a name records it in ``defined`` (only defined names are freed).
    """

    def __init__(self, schedule: Schedule, kernels: dict[int, Any]) -> None:
        self.schedule = schedule
        self.kernels = kernels
        self.defined: set[str] = set()  # names the wrapper body assigns

    # ---- hooks, in the order the generated code runs them
    def begin(self, names: list[str]) -> None:
        """Bind the graph inputs (``names``, ``_scalar<i>`` for a non-tensor) from ``args``
        and empty ``args``."""
        raise NotImplementedError

    def allocate(self, buf: Buffer) -> None:
        """Define ``buf`` as fresh memory with its layout."""
        raise NotImplementedError

    def reuse(self, name: str, freed: str) -> None:
        """Define ``name`` as the memory of ``freed`` (same device, dtype, sizes, strides)."""
        raise NotImplementedError

    def launch(self, kernel: Any) -> None:
        """Run a fused group's kernel on ``kernel.arg_names``."""
        raise NotImplementedError

    def template(self, step: TemplateStep, kernel: Any) -> None:
        """Define ``step.output`` and run the template kernel into it."""
        raise NotImplementedError

    def extern(self, step: ExternStep) -> None:
        """Define the extern's buffer (and its output children) by calling its op."""
        raise NotImplementedError

    def free(self, name: str) -> None:
        """Drop the wrapper's reference to ``name`` (its last use has run)."""
        raise NotImplementedError

    def view(self, buf: Buffer) -> None:
        """Define ``buf``, a ``View``, as a strided window of its base's storage."""
        raise NotImplementedError

    def finish(self, outputs: list[Any]) -> None:
        """Return ``outputs`` (the graph's outputs: buffers and literals) as a tuple."""
        raise NotImplementedError

    # ---- the walk
    def walk(self) -> None:
        graph = self.schedule.graph
        outputs = [o for o in graph.outputs if isinstance(o, Buffer)]
        keep = {o.name for o in outputs} | {b.name for b in graph.inputs if b is not None}
        # A returned view keeps its base: never freed, never handed to another buffer.
        keep |= {o.data.base.name for o in outputs if isinstance(o.data, View)}
        keep |= self.schedule.pinned  # viewed by a returned extern result
        names = [b.name if b is not None else f"_scalar{i}" for i, b in enumerate(graph.inputs)]
        self.begin(names)
        pool: dict[tuple, list[str]] = {}
        owned: set[str] = set()  # buffers this wrapper allocated (poolable)
        freed_at: dict[int, list[str]] = {}
        for name, step in self.schedule.last_use.items():
            freed_at.setdefault(step, []).append(name)
        for i, step in enumerate(self.schedule.steps):
            if isinstance(step, FusedGroup):
                kernel = self.kernels[i]
                for name in step.stores:
                    buf = step.node(name).buffer
                    key = _key(buf)
                    if pool.get(key) and name not in keep:
                        self.reuse(name, pool[key].pop())
                    else:
                        self.allocate(buf)
                    owned.add(name)
                self.launch(kernel)
            elif isinstance(step, TemplateStep):
                self.template(step, self.kernels[i])
            else:
                assert isinstance(step, ExternStep)
                data = step.node.buffer.data
                for arg in buffers_in((data.args, data.kwargs)):
                    if isinstance(arg.data, View):  # a strided window passed as it is
                        self.view(arg)
                self.extern(step)
            for name in freed_at.get(i, []):
                if name in keep or name not in self.defined:
                    continue
                if name in owned:
                    pool.setdefault(_key(graph.buffer(name)), []).append(name)
                else:
                    self.free(name)
        for view in dict.fromkeys(o for o in outputs if isinstance(o.data, View)):
            self.view(view)
        self.finish(list(graph.outputs))


class WrapperWriter(WrapperPlan):
    """The Python wrapper: ``def call(args)``, run by ``WrapperModule.build``."""

    def __init__(self, schedule: Schedule, kernels: dict[int, Any]) -> None:
        super().__init__(schedule, kernels)
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "torch": torch,
            "empty_strided": torch.empty_strided,
            "device": torch.device,
            "_ensure_layout": _ensure_layout,
            "reinterpret": _reinterpret,
            "_inconsistent_sizes": _inconsistent_sizes,
            "inf": float("inf"),
            "nan": float("nan"),
        }
        self.constants = 0
        self.bound: set[str] = set()  # names of the size symbols the wrapper has bound
        self.cuda_device = _only_cuda_device(schedule)

    def sizes(self, exprs: Any) -> str:
        """A tuple of sizes as Python text (literal ints where static)."""
        items = [self.size(e) for e in exprs]
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"

    def size(self, expr: Any) -> str:
        """One size as Python text over the bound symbols."""
        expr = sympy.sympify(expr)
        if expr.is_Integer:
            return str(int(expr))
        unbound = {s for s in expr.free_symbols if s.name not in self.bound}
        if unbound:
            names = ", ".join(sorted(str(s) for s in unbound))
            raise SymbolicUnsupported(
                f"size {expr} uses {names}, which no graph input's size or argument gives"
            )
        return python_expr(expr)

    def bind_sizes(self) -> None:
        """Bind every size symbol from the inputs and check the other input sizes."""
        graph = self.schedule.graph
        sources: list[tuple[str, Any]] = []  # (Python text of a runtime value, its expression)
        for i, expr in sorted(graph.scalars.items()):
            sources.append((f"_scalar{i}", expr))
        for buf in graph.inputs:
            if buf is None:
                continue
            lay = buf.layout
            sources += [(f"{buf.name}.shape[{d}]", s) for d, s in enumerate(lay.size)]
            sources += [(f"{buf.name}.stride({d})", s) for d, s in enumerate(lay.stride)
                        if lay.size[d] != 1]  # fmt: skip
            sources.append((f"{buf.name}.storage_offset()", lay.offset))
        checks: list[tuple[str, Any]] = []
        for text, expr in sources:
            expr = sympy.sympify(expr)
            if expr.is_Symbol and expr.name not in self.bound:
                self.emit(f"{expr.name} = {text}")
                self.bound.add(expr.name)
            elif not expr.is_Integer:
                checks.append((text, expr))
        # Static sizes are Dynamo's to guard; symbolic ones that no bare symbol gave
        # are checked once all are bound.
        checks = [(t, e) for t, e in checks if {s.name for s in e.free_symbols} <= self.bound]
        if checks:
            actual = ", ".join(t for t, _ in checks)
            expected = ", ".join(self.size(e) for _, e in checks)
            self.emit(f"if ({actual},) != ({expected},):")
            self.emit(f"    _inconsistent_sizes({actual!r}, ({actual},), ({expected},))")

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)
        target, sep, _ = line.partition(" = ")
        if sep and target.isidentifier():
            self.defined.add(target)

    def literal(self, value: Any) -> str:
        if isinstance(value, Buffer):
            return value.name
        if isinstance(value, (list, tuple)):
            inner = ", ".join(self.literal(v) for v in value)
            return (
                f"[{inner}]"
                if isinstance(value, list)
                else f"({inner}{',' if len(value) == 1 else ''})"
            )
        if isinstance(value, (bool, int, float, str, type(None))):
            return repr(value)
        if isinstance(value, sympy.Expr):  # a size computed by the graph
            return self.size(value)
        self.constants += 1
        name = f"const{self.constants}"
        self.namespace[name] = value
        return name

    def render(self) -> WrapperModule:
        self.namespace.update(self.schedule.graph.constants)
        self.walk()
        body = self.lines
        if self.cuda_device is not None:
            self.namespace["_device_guard"] = torch.cuda._DeviceGuard
            body = with_device_guard(body, self.cuda_device)
        return WrapperModule("\n".join(["def call(args):", *body]) + "\n", self.namespace)

    def empty(self, lay: Any) -> str:
        """Python text allocating a buffer of layout ``lay``: PyTorch's fast allocator where
        there is one for the device (CUDA: the graph's one device, see ``cuda_device``),
        else ``torch.empty_strided``."""
        sizes, strides = self.sizes(lay.size), self.sizes(lay.stride)
        device = torch.device(lay.device)
        fast = _EMPTY_STRIDED_FAST.get(device.type)
        if fast is not None and (device.type == "cpu" or device.index == self.cuda_device):
            name = f"empty_strided_{device.type}"
            self.namespace[name] = fast
            return f"{name}({sizes}, {strides}, {lay.dtype})"
        device_text = self.literal(lay.device)
        return f"empty_strided({sizes}, {strides}, device={device_text}, dtype={lay.dtype})"

    def begin(self, names: list[str]) -> None:
        if names:
            self.emit(f"{', '.join(names)}{',' if len(names) == 1 else ''} = args")
        self.emit("args.clear()")
        self.bind_sizes()

    def allocate(self, buf: Buffer) -> None:
        self.emit(f"{buf.name} = {self.empty(buf.layout)}")

    def reuse(self, name: str, freed: str) -> None:
        self.emit(f"{name} = {freed}  # reuses freed {freed}")

    def launch(self, kernel: Any) -> None:
        self.namespace[kernel.name] = kernel
        sizes = [self.size(sympy.Symbol(n)) for n in getattr(kernel, "size_args", ())]
        self.emit(f"{kernel.name}({', '.join([*kernel.arg_names, *sizes])})")

    def free(self, name: str) -> None:
        self.emit(f"del {name}")

    def finish(self, outputs: list[Any]) -> None:
        result = ", ".join(self.literal(o) for o in outputs)
        self.emit(f"return ({result}{',' if len(outputs) == 1 else ''})")

    def template(self, step: TemplateStep, kernel: Any) -> None:
        data = step.node.buffer.data
        args = []
        for buf in data.inputs:
            if isinstance(buf.data, View):
                self.view(buf)
            args.append(buf.name)
        if step.epilogue is not None:
            args += [self.operand(op) for op in step.epilogue.operands]
        out = step.output.buffer
        lay = out.layout
        self.emit(f"{out.name} = {self.empty(lay)}")
        target = out.name
        if step.output_layout is not lay:  # the epilogue's buffer in the GEMM's shape
            gemm = step.output_layout
            target = self.window(out.name, gemm.size, gemm.stride, 0)
        direct = getattr(kernel, "direct_op", None)
        op = direct(data.inputs[-1].layout, step.output_layout) if direct else None
        self.namespace[kernel.name] = op or kernel
        sizes = [self.size(sympy.Symbol(n)) for n in getattr(kernel, "size_args", ())]
        if sizes and op is None:  # a pick per size bucket (codegen.size_buckets)
            args.append(f"sizes=({', '.join(sizes)},)")
        self.emit(f"{kernel.name}({', '.join(args)}, out={target})  # {kernel.label}")

    def operand(self, op: Any) -> str:
        """An epilogue operand (``scheduler.epilogue.Operand``) as Python text: its buffer
        itself where the operand is the whole buffer as laid out (a linear layer's bias),
        else a strided window of it (one ``reinterpret`` call per call of the graph)."""
        lay = self.schedule.graph.buffer(op.buffer).layout
        whole = provably_equal_all(op.shape, lay.size) and provably_equal_all(op.stride, lay.stride)
        if op.offset == 0 and whole:
            return op.buffer
        return self.window(op.buffer, op.shape, op.stride, op.offset)

    def view(self, buf: Buffer) -> None:
        """Define ``buf``, a ``View``, as a strided window of its base's storage."""
        assert isinstance(buf.data, View)
        lay = buf.layout
        returned = any(o is buf for o in self.schedule.graph.outputs)
        window = self.window(buf.data.base.name, lay.size, lay.stride, lay.offset, returned)
        self.emit(f"{buf.name} = {window}")

    def window(self, base: str, size: Any, stride: Any, offset: Any, returned: bool = False) -> str:
        """Python text of a strided window of ``base``'s storage at ``offset`` past
        ``base``'s own: ``reinterpret`` where this torch has the fast helper and the
        window is only passed on, else (and for a returned view, which must be a real
        view) ``as_strided``, inline."""
        sizes, strides, off = self.sizes(size), self.sizes(stride), self.size(offset)
        if _reinterpret is not _as_strided_from and not returned:
            return f"reinterpret({base}, {sizes}, {strides}, {off})"
        return f"{base}.as_strided({sizes}, {strides}, {base}.storage_offset() + {off})"

    def extern(self, step: ExternStep) -> None:
        buf = step.node.buffer
        data = buf.data
        if data.__class__.__name__ == "Template":
            raise NotImplementedError("templates are rendered by the template step")
        op = self.literal(data.op)
        args = ", ".join(self.literal(a) for a in data.args)
        kwargs = ", ".join(f"{k}={self.literal(v)}" for k, v in data.kwargs.items())
        call = f"{op}({', '.join(p for p in (args, kwargs) if p)})"
        children = [b for b in self.schedule.graph.buffers if b.output_of and b.output_of[0] is buf]
        if children:
            self.emit(f"{buf.name} = {call}")
            for child in children:
                item = f"{buf.name}[{child.output_of[1]}]"
                self.emit(f"{child.name} = {self._ensure(child, item, data.op)}")
        else:
            self.emit(f"{buf.name} = {self._ensure(buf, call, data.op)}")

    def _ensure(self, buf: Buffer, expr: str, op: Any) -> str:
        lay = buf.layout
        size, stride = self.sizes(lay.size), self.sizes(lay.stride)
        return f"_ensure_layout({expr}, {size}, {stride}, {str(op)!r}, {lay.dtype})"


def with_device_guard(body: list[str], device: int) -> list[str]:
    """``body`` (lines of ``call``, indented once) run under ``_device_guard(device)``: the
    fast CUDA allocator allocates on the current device, so the call makes the graph's
    current, and the guard restores the caller's however the call ends."""
    return [f"    with _device_guard({device}):", *("    " + line for line in body)]


def _only_cuda_device(schedule: Schedule) -> int | None:
    """The index of the one CUDA device the graph's buffers are on, or ``None`` when they
    are on none, on several, or on one without an index, or this torch has no fast CUDA
    allocator (the wrapper then names each buffer's device)."""
    if _EMPTY_STRIDED_FAST["cuda"] is None:
        return None
    devices = {torch.device(b.layout.device) for b in schedule.graph.buffers}
    cuda = {d.index for d in devices if d.type == "cuda"}
    return cuda.pop() if len(cuda) == 1 and None not in cuda else None


def write_wrapper(schedule: Schedule, kernels: dict[int, Any]) -> WrapperModule:
    return WrapperWriter(schedule, kernels).render()
