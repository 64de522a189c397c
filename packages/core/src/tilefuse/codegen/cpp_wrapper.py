"""The C++ wrapper (option ``cpp_wrapper``): a graph's wrapper as C++.

``write_cpp_wrapper(schedule, kernels)`` renders the same walk as the Python wrapper
(``wrapper.WrapperPlan``: same launch order, allocations, reuse of freed buffers and
frees) as one C++ translation unit, a Python extension module whose function

    call(fallback: Callable, constants: tuple[Tensor, ...], args: list[Tensor])
        -> tuple[Tensor, ...]

binds the graph's constants (``graph.constants`` in sorted name order, bound once by the
caller: the library holds no tensors, so one cached library serves every graph that
renders the same source) and inputs, empties ``args`` (as the Python wrapper does, so
inputs are freed at their last use) and runs the graph. When an input tensor is not 16-byte aligned
(kernels are built for aligned pointers) it does nothing itself and returns
``fallback(args)`` (the Python wrapper). The caller binds ``fallback`` and the
constants once (``cpp_build.CppWrapperCall``), so a call costs one call into the library
and nothing else in Python.

The per-call path does no work that could be done once: tensor options are built when
the library loads, sizes and strides are literal arrays (no heap allocation), ``args`` is
emptied through the C API, and the kernels' launch parameters are baked in by their
backends.

How each step is written:
- allocation: ``at::empty_strided`` (on CUDA, PyTorch's caching allocator);
- a fused group's kernel: the C++ its backend gives through the optional
  ``kernel.cpp_launch()`` (``plugin.CppLaunch``);
- a GEMM template: the chosen ``Choice``'s ``cpp_launch()``, or for the eager fallback
  (``plugin.ExternChoice``) without epilogue steps, ``mm_into`` (``at::mm_out``, or
  ``ExternChoice.run``'s padding of an odd N) / ``at::addmm_out`` / ``at::bmm_out`` (or
  the op and a copy into the planned buffer);
- an extern op: ``at::_ops::<op>::call`` for the ops in ``cpp_externs.CPP_EXTERNS``, or
  for tilefuse's own ops the prelude's function that ``cpp_externs.CPP_HELPERS`` names;
  its results brought to the planned layout and dtype as the Python wrapper's
  ``_ensure_layout`` does.

Anything else (a kernel without ``cpp_launch``, an op outside the table, a non-tensor
graph input, an output neither a tensor nor ``None``, a constant not 16-byte aligned, a
fused template epilogue on the eager fallback) raises ``CppUnsupported`` naming it;
``cpp_build.select_wrapper`` then keeps the Python wrapper for the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import plugin
from ..ir.nodes import Buffer, Extern, Template, View
from ..scheduler import ExternStep, Schedule, TemplateStep
from .cpp_externs import (
    CppUnsupported,
    qualified_name,
    render_extern_call,
    scalar_type,
    tensor_returns,
)
from .wrapper import WrapperPlan

#: What every generated wrapper includes (not torch/extension.h: all of libtorch's C++ API
#: would double the compile time).
BASE_HEADERS = (
    "ATen/ATen.h",
    "torch/csrc/utils/pybind.h",  # the at::Tensor <-> torch.Tensor pybind11 caster
    "algorithm",  # std::max (mm_in_blocks)
    "array",
    "cstdint",
    "limits",
    "optional",
    "stdexcept",
    "tuple",
    "vector",
)

_PRELUDE = """\
namespace tilefuse_wrapper {

// The Python wrapper's _ensure_layout: an extern result in the layout (and floating
// dtype) kernels expect.
static at::Tensor ensure_layout(at::Tensor t, at::IntArrayRef size, at::IntArrayRef stride,
                                const char* op, at::ScalarType dtype) {
    if (!t.defined()) {
        return t;
    }
    TORCH_CHECK(t.sizes() == at::IntArrayRef(size), op, " returned a tensor of shape ",
                t.sizes(), " where the graph was compiled for ", size,
                ": its output size depends on values the compiler could not see. "
                "Run this code without torch.compile.");
    at::ScalarType want = t.scalar_type();
    if (dtype != want && at::isFloatingType(dtype) && at::isFloatingType(want)) {
        want = dtype;
    }
    if (want == t.scalar_type() && (t.numel() <= 1 || t.strides() == stride)) {
        return t;
    }
    at::Tensor out = at::empty_strided(size, stride, t.options().dtype(want));
    out.copy_(t);
    return out;
}

// tilefuse::embedding_dense_backward_atomic (frontend/lowerings/embedding_backward.py):
// an embedding's weight gradient as a zero fill and atomic row adds.
static at::Tensor embedding_dense_backward_atomic(const at::Tensor& grad,
                                                  const at::Tensor& indices,
                                                  c10::SymInt num_weights_,
                                                  c10::SymInt padding_idx_) {
    const int64_t num_weights = num_weights_.expect_int();
    const int64_t padding_idx = padding_idx_.expect_int();
    const int64_t width = grad.size(-1);
    at::Tensor out = at::zeros({num_weights, width}, grad.options());
    out.index_add_(0, indices.reshape({-1}), grad.reshape({indices.numel(), width}));
    if (padding_idx >= 0 && padding_idx < num_weights) {
        out.select(0, padding_idx).zero_();
    }
    return out;
}

static bool aligned(const at::Tensor& t) {
    return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0;
}

// A 2-D row- or column-major tensor with a 16-byte-aligned start and leading dimension
// (extern_gemm.py's _aligned_operand).
static bool aligned_operand(const at::Tensor& t) {
    if (t.dim() != 2 || (t.stride(0) != 1 && t.stride(1) != 1)) {
        return false;
    }
    const int64_t lead = t.stride(1) == 1 ? t.stride(0) : t.stride(1);
    return (lead * static_cast<int64_t>(t.element_size())) % 16 == 0 && aligned(t);
}

// extern_gemm.py's _aligned_block and _run_in_blocks: with aligned operands, a large K that
// one operand holds contiguously (or a column-major a's M) and that is no multiple of 16
// bytes runs as an aligned GEMM plus a thin one; split along K, in a float32 accumulator
// rounded once (only where torch has aten::mm.dtype). False where it does not apply.
static bool mm_in_blocks(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, int64_t per) {
    if (!aligned_operand(a) || !aligned_operand(b)) {
        return false;
    }
    const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
    if (std::max(m * n, m * k) < (int64_t(1) << 20)) {
        return false;
    }
    const bool k_contiguous = a.stride(1) == 1 || b.stride(0) == 1;
    if (TILEFUSE_HAS_MM_OUT_DTYPE && k % per != 0 && k_contiguous && k >= per) {
        const int64_t cut = k - k % per;
#if TILEFUSE_HAS_MM_OUT_DTYPE
        at::Tensor acc = at::mm(a.narrow(1, 0, cut), b.narrow(0, 0, cut), at::kFloat);
#else
        at::Tensor acc;  // not reached: the condition above is false
#endif
        const at::Tensor a_rest = a.narrow(1, cut, k - cut).to(at::kFloat);
        acc.addmm_(a_rest, b.narrow(0, cut, k - cut).to(at::kFloat));
        out.copy_(out.scalar_type() == b.scalar_type() ? acc : acc.to(b.scalar_type()));
        return true;
    }
    if (m % per != 0 && m >= per && a.stride(0) == 1 && a.stride(1) != 1) {
        const int64_t cut = m - m % per;
        const bool own = out.scalar_type() == b.scalar_type();
        at::Tensor dst = own ? out : at::empty({m, n}, b.options());
        at::Tensor head = dst.narrow(0, 0, cut);
        at::Tensor tail = dst.narrow(0, cut, m - cut);
        at::mm_out(head, a.narrow(0, 0, cut), b);
        at::mm_out(tail, a.narrow(0, cut, m - cut), b);
        if (!own) {
            out.copy_(dst);
        }
        return true;
    }
    return false;
}

// ExternChoice.run for mm (extern_gemm.py): cuBLAS serves a large half-precision N that is
// no multiple of 16 bytes only with its 1-element-aligned kernels, so the product goes to
// rows padded to such a multiple (an aligned column-major b is read in place, as its
// aligned columns and the tail, straight into out's rows when the lowering padded them;
// any other b is padded), then into ``out``.
static void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool in_place) {
    const int64_t n = b.size(1);
    const int64_t per = 16 / static_cast<int64_t>(b.element_size());
    const bool half = b.scalar_type() == at::kHalf || b.scalar_type() == at::kBFloat16;
    if (!out.is_cuda() || !half || n % per == 0 || out.numel() < (int64_t(1) << 20)) {
        if (out.is_cuda() && half && mm_in_blocks(out, a, b, per)) {
            return;
        }
        if (in_place) {
            at::mm_out(out, a, b);
        } else {
            out.copy_(at::mm(a, b));
        }
        return;
    }
    const int64_t width = (n + per - 1) / per * per;
    const bool column_major = b.stride(0) == 1 && b.stride(1) != 1;
    if (column_major && (b.stride(1) * b.element_size()) % 16 == 0 && aligned(b)) {
        // Into out's own rows when the lowering padded them (its padded_rows layout).
        const bool own_rows = out.stride(1) == 1 && out.stride(0) == width && aligned(out) &&
                              out.scalar_type() == b.scalar_type();
        at::Tensor rows =
            own_rows ? out : at::empty({a.size(0), width}, b.options()).narrow(1, 0, n);
        const int64_t lead = n - n % per;
        at::Tensor head = rows.narrow(1, 0, lead);
        at::Tensor tail = rows.narrow(1, lead, n - lead);
        at::mm_out(head, a, b.narrow(1, 0, lead));
        at::mm_out(tail, a, b.narrow(1, lead, n - lead));
        if (!own_rows) {
            out.copy_(rows);
        }
        return;
    }
    at::Tensor padded;
    if (column_major) {
        at::Tensor t = at::empty({width, b.size(0)}, b.options());
        t.narrow(0, 0, n).copy_(b.t());
        t.narrow(0, n, width - n).zero_();
        padded = t.t();
    } else {
        padded = at::empty({b.size(0), width}, b.options());
        padded.narrow(1, 0, n).copy_(b);
        padded.narrow(1, n, width - n).zero_();
    }
    at::Tensor rows = at::empty({a.size(0), width}, b.options());
    at::mm_out(rows, a, padded);
    out.copy_(rows.narrow(1, 0, n));
}

}  // namespace tilefuse_wrapper
"""


@dataclass
class CppWrapperSource:
    """A generated C++ wrapper: its ``source`` and what compiling it needs besides
    torch's headers and libraries (from the kernels' ``CppLaunch``)."""

    source: str
    include_dirs: tuple[str, ...] = ()
    library_dirs: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    kernels: list[str] = field(default_factory=list)  # kernels launched from C++


def cpp_launch_of(obj: Any, what: str) -> plugin.CppLaunch:
    """``obj.cpp_launch()`` (called with no fake-tensor mode active), checked;
    ``CppUnsupported`` naming ``what`` when it has none, answers ``None``, raises, or
    answers something that is not a ``plugin.CppLaunch``."""
    method = getattr(obj, "cpp_launch", None)
    if not callable(method):
        raise CppUnsupported(f"{what} has no cpp_launch() (its backend launches it from Python)")
    try:
        # Outside the compile's fake-tensor mode: a backend may build (allocate real tensors,
        # as Triton's warmup needs) to answer.
        with unset_fake_temporarily():
            launch = method()
    except Exception as exc:  # a plugin's bug: the Python wrapper still runs the graph
        raise CppUnsupported(f"{what}: cpp_launch() raised {type(exc).__name__}: {exc}") from exc
    if launch is None:
        raise CppUnsupported(f"{what} has no C++ launch (cpp_launch() answered None)")
    if not isinstance(launch, plugin.CppLaunch):
        raise CppUnsupported(f"{what}: cpp_launch() answered {launch!r}, not a CppLaunch")
    if not launch.function.isidentifier():
        raise CppUnsupported(f"{what}: CppLaunch.function {launch.function!r} is not a C++ name")
    return launch


def _ints(values: Any) -> str:
    return f"{{{', '.join(str(int(v)) for v in values)}}}"


class CppWrapperWriter(WrapperPlan):
    """Renders a schedule's wrapper as C++ (see the module docstring)."""

    def __init__(self, schedule: Schedule, kernels: dict[int, Any]) -> None:
        super().__init__(schedule, kernels)
        self.lines: list[str] = []
        self.headers: list[str] = list(BASE_HEADERS)
        self.shared: list[str] = []
        self.namespaces: list[str] = []
        self.include_dirs: list[str] = []
        self.library_dirs: list[str] = []
        self.libraries: list[str] = []
        self.launched: list[str] = []
        self.tuples: set[str] = set()  # extern results that hold several values
        self.options: dict[str, str] = {}  # TensorOptions text -> its static's name

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def assign(self, name: str, expr: str) -> None:
        """``name = expr``, declaring ``name`` the first time."""
        declare = "" if name in self.defined else "at::Tensor "
        self.defined.add(name)
        self.emit(f"{declare}{name} = {expr};")

    # ---- the hooks of WrapperPlan
    def begin(self, names: list[str]) -> None:
        graph = self.schedule.graph
        if any(b is None for b in graph.inputs):
            raise CppUnsupported("a graph input that is not a tensor (a Python number)")
        for i, name in enumerate(constant_names(graph.constants)):
            if graph.constants[name].data_ptr() % 16:
                raise CppUnsupported(f"graph constant {name} is not 16-byte aligned")
            # Not in ``defined``: the plan frees what the call defined, never a constant.
            self.emit(f"at::Tensor {name} = constants[{i}].cast<at::Tensor>();")
        self.emit(f"if (PyList_Size(args.ptr()) != {len(names)}) {{")
        self.emit(f'    throw std::invalid_argument("tilefuse: expected {len(names)} inputs");')
        self.emit("}")
        for i, name in enumerate(names):
            self.emit(f"at::Tensor {name} = args[{i}].cast<at::Tensor>();")
            self.defined.add(name)
        if names:
            checks = " || ".join(f"!tilefuse_wrapper::aligned({n})" for n in names)
            self.emit(f"if ({checks}) {{")
            self.emit("    return fallback(args);  // the Python wrapper runs this call")
            self.emit("}")
        self.emit("PyList_SetSlice(args.ptr(), 0, PY_SSIZE_T_MAX, nullptr);  // args.clear()")

    def allocate(self, buf: Buffer) -> None:
        self.assign(buf.name, self._empty(buf))

    def _empty(self, buf: Buffer) -> str:
        lay = buf.layout
        options = (
            f"at::TensorOptions().dtype({scalar_type(lay.dtype)})"
            f'.device(c10::Device("{lay.device}"))'
        )
        name = self.options.setdefault(options, f"kOptions{len(self.options)}")
        return f"at::empty_strided({_ints(lay.size)}, {_ints(lay.stride)}, {name})"

    def reuse(self, name: str, freed: str) -> None:
        self.assign(name, f"{freed}  /* reuses freed {freed} */")

    def launch(self, kernel: Any) -> None:
        self._call_launch(kernel, f"kernel {kernel.name}", kernel.name, list(kernel.arg_names))

    def _call_launch(self, obj: Any, what: str, name: str, args: list[str]) -> None:
        launch = cpp_launch_of(obj, what)
        namespace = f"tf_{name}"
        blobs = []
        for blob, data in launch.blobs.items():
            if not blob.isidentifier():
                raise CppUnsupported(f"{what}: blob name {blob!r} is not a C++ name")
            blobs.append(_byte_array(blob, bytes(data)))
        self.namespaces.append(
            f"namespace {namespace} {{\n{''.join(blobs)}{launch.declarations}\n}}  "
            f"// namespace {namespace}\n"
        )
        if launch.shared and launch.shared not in self.shared:
            self.shared.append(launch.shared)
        for target, extra in ((self.headers, launch.headers),
                              (self.include_dirs, launch.include_dirs),
                              (self.library_dirs, launch.library_dirs),
                              (self.libraries, launch.libraries)):  # fmt: skip
            target.extend(x for x in extra if x not in target)
        self.launched.append(name)
        self.emit(f"{namespace}::{launch.function}({', '.join(args)});")

    def template(self, step: TemplateStep, kernel: Any) -> None:
        data = step.node.buffer.data
        assert isinstance(data, Template)
        args = []
        for buf in data.inputs:
            if isinstance(buf.data, View):
                self.view(buf)
            args.append(buf.name)
        if step.epilogue is not None:
            for i, op in enumerate(step.epilogue.operands):
                operand = f"{kernel.name}_operand{i}"
                self.assign(operand, f"{op.buffer}.as_strided({_ints(op.shape)}, "
                                     f"{_ints(op.stride)}, {op.buffer}.storage_offset() + "
                                     f"{int(op.offset)})")  # fmt: skip
                args.append(operand)
        out = step.output.buffer
        self.assign(out.name, self._empty(out))
        target = out.name
        if step.output_layout is not out.layout:  # the epilogue's buffer in the GEMM's shape
            gemm = step.output_layout
            target = f"{kernel.name}_out"
            self.assign(target, f"{out.name}.as_strided({_ints(gemm.size)}, "
                                f"{_ints(gemm.stride)})")  # fmt: skip
        choice = kernel.choice
        if isinstance(choice, plugin.ExternChoice):
            if target != out.name:
                raise CppUnsupported(
                    f"template {kernel.name}: an eager GEMM into a reshaped epilogue"
                )
            self._extern_gemm(choice, list(data.inputs[: plugin.GEMM_OPS[choice.op]]), out)
        else:
            self._check_aligned(step, data, kernel.name)
            self._call_launch(choice, f"template {kernel.name} ({kernel.label})", kernel.name,
                              [*args, target])  # fmt: skip

    def _check_aligned(self, step: TemplateStep, data: Template, name: str) -> None:
        """``CppUnsupported`` when a template's tensor starts off a 16-byte boundary of
        its (aligned) base: a kernel built for aligned tensors would refuse it at run
        time, where the Python wrapper's launch adapts."""
        odd = [buf.name for buf in data.inputs if _off_16_bytes(buf)]
        if step.epilogue is not None:
            graph = self.schedule.graph
            for i, op in enumerate(step.epilogue.operands):
                base = graph.buffer(op.buffer)
                if _off_16_bytes(base, int(op.offset) * base.layout.dtype.itemsize):
                    odd.append(f"epilogue operand {i} ({op.buffer})")
        if odd:
            raise CppUnsupported(
                f"template {name}: {', '.join(odd)} not 16-byte aligned (a view at an odd "
                "offset); its C++ launch is built for aligned tensors"
            )

    def _extern_gemm(self, choice: plugin.ExternChoice, inputs: list[Buffer], out: Buffer) -> None:
        """``ExternChoice.run`` for an epilogue without steps: in place when the result
        has the op's dtype (its last input's) and is contiguous, else the op and a copy
        (a bare cast). ``mm`` goes through ``mm_into``, which pads a large half-precision
        odd N as ``ExternChoice.run`` does; ``bmm``'s padding is not done here."""
        if choice.epilogue.steps:
            raise CppUnsupported(
                f"a fused epilogue on the eager {choice.op} (no template selector took it)"
            )
        names = ", ".join(b.name for b in inputs)
        in_place = inputs[-1].layout.dtype == out.layout.dtype and _contiguous(out)
        if choice.op == "mm":
            flag = "true" if in_place else "false"
            self.emit(f"tilefuse_wrapper::mm_into({out.name}, {names}, {flag});")
        elif in_place:
            self.emit(f"at::{choice.op}_out({out.name}, {names});")
        else:
            self.emit(f"{out.name}.copy_(at::{choice.op}({names}));")

    def extern(self, step: ExternStep) -> None:
        buf = step.node.buffer
        data = buf.data
        assert isinstance(data, Extern)
        op = data.op
        call = render_extern_call(op, tuple(data.args), dict(data.kwargs))
        name = qualified_name(op)
        graph = self.schedule.graph
        children = [b for b in graph.buffers if b.output_of and b.output_of[0] is buf]
        returns = tensor_returns(op)
        if children:
            self.emit(f"auto {buf.name} = {call};")
            self.defined.add(buf.name)
            self.tuples.add(buf.name)
            for child in children:
                assert child.output_of is not None
                index = int(child.output_of[1])
                if index >= len(returns) or not returns[index]:
                    raise CppUnsupported(f"extern op {name}: output {index} is not a tensor")
                item = f"std::get<{index}>({buf.name})" if len(returns) > 1 else buf.name
                self.assign(child.name, self._ensure(child, item, name))
        else:
            if returns != [True]:
                raise CppUnsupported(f"extern op {name} returns {len(returns)} values, used as one")
            self.assign(buf.name, self._ensure(buf, call, name))

    def _ensure(self, buf: Buffer, expr: str, op: str) -> str:
        lay = buf.layout
        return (f'tilefuse_wrapper::ensure_layout({expr}, {_ints(lay.size)}, {_ints(lay.stride)}, '
                f'"{op}", {scalar_type(lay.dtype)})')  # fmt: skip

    def free(self, name: str) -> None:
        if name in self.tuples:
            self.emit(f"{name} = decltype({name})();")
        else:
            self.emit(f"{name}.reset();")

    def view(self, buf: Buffer) -> None:
        assert isinstance(buf.data, View)
        lay = buf.layout
        base = buf.data.base.name
        self.assign(buf.name, f"{base}.as_strided({_ints(lay.size)}, {_ints(lay.stride)}, "
                              f"{base}.storage_offset() + {int(lay.offset)})")  # fmt: skip

    def finish(self, outputs: list[Any]) -> None:
        """Return the outputs: tensors, and ``None`` where the graph returns it (a
        backward graph's gradient of an integer input, such as token ids)."""
        for out in outputs:
            if out is not None and not isinstance(out, Buffer):
                raise CppUnsupported(f"a graph output that is not a tensor ({out!r})")
        names = ", ".join("pybind11::none()" if o is None else o.name for o in outputs)
        self.emit(f"return pybind11::make_tuple({names});")

    # ---- the translation unit
    def render(self) -> CppWrapperSource:
        self.walk()
        parts = [
            "// Generated by tilefuse: the C++ wrapper of one compiled graph.\n",
            *(f"#include <{h}>\n" for h in self.headers),
            "\n",
            # aten::mm.dtype (a float32 product of half inputs) where this torch has it.
            f"#define TILEFUSE_HAS_MM_OUT_DTYPE {int(_has_mm_out_dtype())}\n",
            _PRELUDE,
            "\n",
            *(
                f"static const at::TensorOptions {name} = {text};  // built once, at load\n"
                for text, name in self.options.items()
            ),  # fmt: skip
            "\n",
            *(s + "\n" for s in self.shared),
            *self.namespaces,
            "\nstatic pybind11::object call(pybind11::object fallback, pybind11::tuple constants,\n"
            "                             pybind11::list args) {\n",
            *(line + "\n" for line in self.lines),
            "}\n\n",
            "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {\n",
            '    m.def("call", &call, "Run the graph; fallback(args) for unaligned inputs");\n',
            "}\n",
        ]
        return CppWrapperSource(
            "".join(parts),
            tuple(self.include_dirs),
            tuple(self.library_dirs),
            tuple(self.libraries),
            list(self.launched),
        )


def constant_names(constants: dict[str, Any]) -> list[str]:
    """The order in which the generated ``call`` takes a graph's constants."""
    return sorted(constants)


def _off_16_bytes(buf: Buffer, extra: int = 0) -> bool:
    """Whether ``buf`` (plus ``extra`` bytes) may start off a 16-byte boundary of the
    buffer it views, following views of views. That buffer is taken as aligned, except an
    extern's result that may view its input at any offset (``diagonal(1)``)."""
    total = extra
    while isinstance(buf.data, View):
        total += int(buf.layout.offset) * buf.layout.dtype.itemsize
        buf = buf.data.base
    producer = buf.output_of[0] if buf.output_of is not None else buf  # one of several
    if isinstance(producer.data, Extern) and producer.data.may_alias_inputs():
        return True
    return total % 16 != 0


def _contiguous(buf: Buffer) -> bool:
    expected = 1
    for size, stride in reversed(list(zip(buf.layout.size, buf.layout.stride))):
        if int(size) != 1 and int(stride) != expected:
            return False
        expected *= int(size)
    return True


def _byte_array(name: str, data: bytes) -> str:
    rows = [", ".join(str(b) for b in data[i : i + 24]) for i in range(0, len(data), 24)]
    body = ",\n    ".join(rows) if rows else "0"
    return (
        f"alignas(16) static const unsigned char {name}[] = {{\n    {body}\n}};\n"
        f"static const size_t {name}_size = {len(data)};\n"
    )


def write_cpp_wrapper(schedule: Schedule, kernels: dict[int, Any]) -> CppWrapperSource:
    """The C++ wrapper of ``schedule`` (kernels built); ``CppUnsupported`` naming what it
    cannot write."""
    return CppWrapperWriter(schedule, kernels).render()


def _has_mm_out_dtype() -> bool:
    """Whether this torch has ``aten::mm.dtype`` (``at::mm(a, b, out_dtype)``), which the
    prelude's ``mm_in_blocks`` needs to split a GEMM along K."""
    import torch

    return hasattr(torch.ops.aten.mm, "dtype")
