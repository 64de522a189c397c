"""The C++ launch of a built CUTLASS choice (``plugin.CppLaunch``), for core's C++ wrapper.

What ``launcher.launch`` does from Python, written as C++: the kernel's ``.so`` exports
C entry points (``tf_gemm_workspace_size``, ``tf_gemm_run``, ``tf_status_string``); the
C++ wrapper resolves them with ``dlsym`` and calls ``tf_gemm_run`` on the current stream
with the pointer array filled from the tensors and the ``ints`` array (sizes and
strides) baked in, since the graph's layouts are fixed.

Verification: the ``.so`` is opened with ``RTLD_NOLOAD``, so the wrapper only ever uses a
library this process has already loaded, which ``CutlassGemmChoice.cpp_launch`` does
(through the verified build cache) before handing out the launch; it never loads bytes
from disk by itself. The workspace size is asked once (it depends on the sizes only) and
the workspace is allocated per call through PyTorch's caching allocator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tilefuse import plugin

from .launcher import plan_arguments
from .problem import GemmProblem

HEADERS = ("dlfcn.h", "c10/core/Stream.h", "c10/core/impl/DeviceGuardImplInterface.h")

SHARED = """\
namespace tilefuse_cuda_cpp {

// The C entry points of one CUTLASS kernel library (templates/gemm_sm90.cu.j2).
struct Entry {
    int (*workspace_size)(void* const*, const int64_t*, size_t*);
    int (*run)(void* const*, const int64_t*, void*, void*);
    const char* (*status)(int);
};

template <typename F>
static void resolve(void* lib, const char* name, const char* path, F& out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    TORCH_CHECK(out != nullptr, "tilefuse: ", path, " has no symbol ", name);
}

// The entry points of the library at `path`, which this process must have loaded already
// (RTLD_NOLOAD: the wrapper never loads an unverified library itself).
static Entry open(const char* path, const char* kernel) {
    void* lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    TORCH_CHECK(lib != nullptr, "tilefuse: the CUTLASS kernel ", kernel, " (", path,
                ") is not loaded in this process; compile the graph again");
    Entry e{};
    resolve(lib, "tf_gemm_workspace_size", path, e.workspace_size);
    resolve(lib, "tf_gemm_run", path, e.run);
    resolve(lib, "tf_status_string", path, e.status);
    return e;
}

static void check(const Entry& e, int status, const char* what, const char* kernel) {
    if (status != 0) {
        const char* text = e.status(status);
        TORCH_CHECK(false, "tilefuse: CUTLASS ", what, " failed for ", kernel, ": ",
                    text != nullptr ? text : "unknown", " (status ", status, ")");
    }
}

static void* pointer(const at::Tensor& t, const char* kernel) {
    void* p = t.data_ptr();
    TORCH_CHECK(reinterpret_cast<std::uintptr_t>(p) % 16 == 0, "tilefuse: ", kernel,
                " needs 16-byte aligned tensors (TMA)");
    return p;
}

// One launch on the current stream of `out`'s device; `workspace` bytes of scratch.
static void run(const Entry& e, const char* kernel, void* const* ptrs, const int64_t* ints,
                size_t workspace, const at::Tensor& out) {
    at::Tensor scratch;
    void* scratch_ptr = nullptr;
    if (workspace != 0) {
        scratch = at::empty({static_cast<int64_t>(workspace)}, out.options().dtype(at::kByte));
        scratch_ptr = scratch.data_ptr();
    }
    c10::Stream current = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
                              ->getStream(out.device());
    check(e, e.run(ptrs, ints, scratch_ptr, reinterpret_cast<void*>(current.native_handle())),
          "launch", kernel);
}

}  // namespace tilefuse_cuda_cpp
"""


@dataclass(frozen=True)
class _Slot:
    """A tensor stand-in for ``plan_arguments``: its layout and its ``Choice``-order index."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    index: int

    def stride(self, dim: int | None = None) -> Any:
        return self.strides if dim is None else self.strides[dim]


def render_cutlass_launch(
    *,
    kernel_name: str,
    library: str,
    problem: GemmProblem,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
) -> plugin.CppLaunch:
    """The ``CppLaunch`` of the kernel in ``library`` (the path of its loaded ``.so``) for
    exactly ``inputs`` (the op's tensors, then the epilogue's operands) and ``layout``.

    The launch function takes those tensors then ``out``, as ``Choice.run`` does. Raises
    ``ValueError`` when ``library`` cannot be written as a C++ string literal.
    """
    if any(c in library for c in '"\\\n') or not library.isprintable():
        raise ValueError(f"{kernel_name}: library path {library!r}")
    slots = [_Slot(tuple(s.shape), tuple(s.stride), i) for i, s in enumerate((*inputs, layout))]
    tensors, ints = plan_arguments(problem, slots[:-1], slots[-1])
    out = len(slots) - 1
    # A, B, C and D are read through TMA (16-byte aligned); the vectors are not.
    ptrs = [
        "nullptr" if t is None
        else f"tilefuse_cuda_cpp::pointer(a{t.index}, kName)" if i < 4
        else f"a{t.index}.data_ptr()"
        for i, t in enumerate(tensors)
    ]  # fmt: skip
    params = ", ".join(f"const at::Tensor& a{i}" for i in range(len(slots)))
    ptr_lines = ",\n        ".join(ptrs)
    declarations = f"""\
static const char kName[] = "{kernel_name}";
static const char kLibrary[] = "{library}";
static const int64_t kInts[] = {{{", ".join(f"int64_t({v})" for v in ints)}}};

static const tilefuse_cuda_cpp::Entry& entry() {{
    static const tilefuse_cuda_cpp::Entry e = tilefuse_cuda_cpp::open(kLibrary, kName);
    return e;
}}

void launch({params}) {{
    const tilefuse_cuda_cpp::Entry& e = entry();
    void* ptrs[] = {{
        {ptr_lines}
    }};
    // The workspace depends on the sizes alone, which are fixed: asked once.
    static const size_t workspace = [&] {{
        size_t size = 0;
        tilefuse_cuda_cpp::check(e, e.workspace_size(ptrs, kInts, &size), "can_implement",
                                 kName);
        return size;
    }}();
    tilefuse_cuda_cpp::run(e, kName, ptrs, kInts, workspace, a{out});
}}
"""
    return plugin.CppLaunch(
        function="launch", declarations=declarations, shared=SHARED, headers=HEADERS
    )
