"""The wrapper: a Python module that allocates buffers, launches steps in order and frees.

Memory plan as rendered here: fused-away buffers never appear; a buffer is
deleted right after its last use; a freed kernel-output buffer is handed to the
next allocation with the same device, dtype, sizes and strides; graph inputs and
outputs are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CompileError
from ..ir.nodes import Buffer, View
from ..scheduler import ExternStep, FusedGroup, Schedule, TemplateStep


@dataclass
class WrapperModule:
    source: str
    namespace: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        exec(compile(self.source, "<tilefuse wrapper>", "exec"), self.namespace)
        return self.namespace["call"]


def _ensure_layout(
    t: torch.Tensor | None, size: tuple, stride: tuple, op: str = "an extern op"
) -> torch.Tensor | None:
    """Extern results must match the layout kernels were generated for.

    A result with other strides is copied into the planned layout. A result of another
    shape raises ``CompileError``: the graph was planned from an example value that does
    not hold for this call (an op whose output size depends on its inputs' values, sized
    by fake tensors that ran it on zeros), and a copy would broadcast it into wrong values.

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
    if t.numel() <= 1 or tuple(t.stride()) == stride:
        return t
    out = torch.empty_strided(size, stride, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def _key(buf: Buffer) -> tuple:
    lay = buf.layout
    return (str(lay.device), lay.dtype, tuple(int(s) for s in lay.size),
            tuple(int(s) for s in lay.stride))  # fmt: skip


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
            "inf": float("inf"),
            "nan": float("nan"),
        }
        self.constants = 0

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
        self.constants += 1
        name = f"const{self.constants}"
        self.namespace[name] = value
        return name

    def render(self) -> WrapperModule:
        self.namespace.update(self.schedule.graph.constants)
        self.walk()
        return WrapperModule("\n".join(["def call(args):", *self.lines]) + "\n", self.namespace)

    def begin(self, names: list[str]) -> None:
        if names:
            self.emit(f"{', '.join(names)}{',' if len(names) == 1 else ''} = args")
        self.emit("args.clear()")

    def allocate(self, buf: Buffer) -> None:
        lay = buf.layout
        size = self.literal(tuple(int(s) for s in lay.size))
        self.emit(
            f"{buf.name} = empty_strided({size}, "
            f"{self.literal(tuple(int(s) for s in lay.stride))}, "
            f"device={self.literal(lay.device)}, dtype={lay.dtype})"
        )

    def reuse(self, name: str, freed: str) -> None:
        self.emit(f"{name} = {freed}  # reuses freed {freed}")

    def launch(self, kernel: Any) -> None:
        self.namespace[kernel.name] = kernel
        self.emit(f"{kernel.name}({', '.join(kernel.arg_names)})")

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
            for op in step.epilogue.operands:
                args.append(f"{op.buffer}.as_strided({op.shape!r}, {op.stride!r}, "
                            f"{op.buffer}.storage_offset() + {op.offset})")  # fmt: skip
        out = step.output.buffer
        lay = out.layout
        self.emit(
            f"{out.name} = empty_strided({tuple(int(s) for s in lay.size)!r}, "
            f"{tuple(int(s) for s in lay.stride)!r}, device={self.literal(lay.device)}, "
            f"dtype={lay.dtype})"
        )
        self.namespace[kernel.name] = kernel
        self.emit(f"{kernel.name}({', '.join(args)}, out={out.name})  # {kernel.label}")

    def view(self, buf: Buffer) -> None:
        """Define ``buf``, a ``View``, as a strided window of its base's storage."""
        assert isinstance(buf.data, View)
        lay = buf.layout
        size = tuple(int(s) for s in lay.size)
        stride = tuple(int(s) for s in lay.stride)
        base = buf.data.base.name
        self.emit(f"{buf.name} = {base}.as_strided({size!r}, {stride!r}, "
                  f"{base}.storage_offset() + {int(lay.offset)})")  # fmt: skip

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
        size = tuple(int(s) for s in lay.size)
        stride = tuple(int(s) for s in lay.stride)
        return f"_ensure_layout({expr}, {size!r}, {stride!r}, {str(op)!r})"


def write_wrapper(schedule: Schedule, kernels: dict[int, Any]) -> WrapperModule:
    return WrapperWriter(schedule, kernels).render()
