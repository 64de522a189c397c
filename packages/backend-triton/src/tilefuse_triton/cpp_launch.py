"""The C++ launch of a built Triton kernel, for core's C++ wrapper (``plugin.CppLaunch``).

What ``launcher.CubinLauncher`` does from Python, written as C++: the cubin (embedded in
the wrapper as a blob) is loaded once into the device's primary context with
``cuModuleLoadData`` / ``cuModuleGetFunction``; each call fills the parameter array
(tensor pointers, the baked integer sizes, zero scratch pointers) and calls
``cuLaunchKernel`` on the device's current stream (c10's device-generic stream
interface). The driver library is opened with ``dlopen("libcuda.so.1")``, so building
needs ``cuda.h`` and nothing to link besides torch's core libraries.

Context (as ``launcher._bind_context``): a thread may have no current CUDA context (one
that made no runtime call yet, e.g. autograd's device threads) or another device's. The
load and each launch make the device's primary context (PyTorch's and Triton's) current
for their duration and restore the previous one where there was one.

Specialization: the cubin was compiled for 16-byte aligned tensors and for the graph's
sizes, which are baked in; a launch with an unaligned tensor throws (the C++ wrapper
hands a call with an unaligned graph input to the Python wrapper before any launch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tilefuse import plugin

# Triton signature type -> C++ type of the kernel parameter (launcher._SCALARS' ctypes).
CPP_SCALARS = {
    "i1": "int8_t", "i8": "int8_t", "i16": "int16_t", "i32": "int32_t", "i64": "int64_t",
    "u1": "uint8_t", "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
    "fp32": "float", "f32": "float", "fp64": "double", "f64": "double",
}  # fmt: skip
MAX_STATIC_SHARED = 48 * 1024
HEADERS = ("cuda.h", "dlfcn.h", "c10/core/Stream.h", "c10/core/impl/DeviceGuardImplInterface.h")

SHARED = """\
namespace tilefuse_triton_cpp {

// The CUDA driver entry points the launches use, from libcuda.so.1 opened at first use.
struct Driver {
    CUresult (*ctxGetCurrent)(CUcontext*);
    CUresult (*ctxSetCurrent)(CUcontext);
    CUresult (*deviceGet)(CUdevice*, int);
    CUresult (*primaryCtxRetain)(CUcontext*, CUdevice);
    CUresult (*moduleLoadData)(CUmodule*, const void*);
    CUresult (*moduleGetFunction)(CUfunction*, CUmodule, const char*);
    CUresult (*funcSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*launchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
                             unsigned int, unsigned int, unsigned int, unsigned int,
                             CUstream, void**, void**);
};

template <typename F>
static void resolve(void* lib, const char* name, F& out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    TORCH_CHECK(out != nullptr, "tilefuse: libcuda.so.1 has no symbol ", name);
}

static const Driver& driver() {
    static const Driver d = [] {
        void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        TORCH_CHECK(lib != nullptr, "tilefuse: cannot load libcuda.so.1: ", dlerror());
        Driver d{};
        resolve(lib, "cuCtxGetCurrent", d.ctxGetCurrent);
        resolve(lib, "cuCtxSetCurrent", d.ctxSetCurrent);
        resolve(lib, "cuDeviceGet", d.deviceGet);
        resolve(lib, "cuDevicePrimaryCtxRetain", d.primaryCtxRetain);
        resolve(lib, "cuModuleLoadData", d.moduleLoadData);
        resolve(lib, "cuModuleGetFunction", d.moduleGetFunction);
        resolve(lib, "cuFuncSetAttribute", d.funcSetAttribute);
        resolve(lib, "cuLaunchKernel", d.launchKernel);
        return d;
    }();
    return d;
}

static void check(CUresult status, const char* what, const char* kernel) {
    TORCH_CHECK(status == CUDA_SUCCESS, "tilefuse: CUDA driver error ",
                static_cast<int>(status), " in ", what, " (", kernel, ")");
}

// Makes `context` current for a scope; restores the previous context where there was one
// (a thread that had none keeps the primary context bound, as Triton's launcher leaves it).
struct ContextScope {
    CUcontext previous = nullptr;
    bool restore = false;
    ContextScope(CUcontext context, const char* kernel) {
        check(driver().ctxGetCurrent(&previous), "cuCtxGetCurrent", kernel);
        if (previous != context) {
            check(driver().ctxSetCurrent(context), "cuCtxSetCurrent", kernel);
            restore = previous != nullptr;
        }
    }
    ~ContextScope() {
        if (restore) {
            driver().ctxSetCurrent(previous);
        }
    }
};

struct Loaded {
    CUcontext context;
    CUfunction function;
};

// The kernel `name` of `cubin`, loaded into the primary context of `device`.
static Loaded load(const unsigned char* cubin, const char* name, int device, int shared) {
    const Driver& d = driver();
    CUdevice handle;
    check(d.deviceGet(&handle, device), "cuDeviceGet", name);
    CUcontext primary;
    check(d.primaryCtxRetain(&primary, handle), "cuDevicePrimaryCtxRetain", name);
    ContextScope scope(primary, name);
    CUmodule module;
    check(d.moduleLoadData(&module, cubin), "cuModuleLoadData", name);
    CUfunction function;
    check(d.moduleGetFunction(&function, module, name), "cuModuleGetFunction", name);
    if (shared > @MAX_STATIC_SHARED@) {
        check(d.funcSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 shared),
              "cuFuncSetAttribute", name);
    }
    return Loaded{primary, function};
}

static CUdeviceptr pointer(const at::Tensor& t, const char* kernel) {
    auto p = reinterpret_cast<CUdeviceptr>(t.data_ptr());
    TORCH_CHECK(p % 16 == 0, "tilefuse: ", kernel, " was built for 16-byte aligned tensors");
    return p;
}

static void launch(const Loaded& k, const char* kernel, unsigned int grid, unsigned int block,
                   unsigned int shared, int device, void** params) {
    ContextScope scope(k.context, kernel);
    // The current stream through c10's device-generic interface (torch's CUDA headers
    // are not needed to build, so CPU-only torch wheels compile this too).
    c10::Stream current = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
                              ->getStream(c10::Device(c10::DeviceType::CUDA, device));
    auto stream = static_cast<CUstream>(current.native_handle());
    check(driver().launchKernel(k.function, grid, 1, 1, block, 1, 1, shared, stream, params,
                                nullptr),
          "cuLaunchKernel", kernel);
}

}  // namespace tilefuse_triton_cpp
""".replace("@MAX_STATIC_SHARED@", str(MAX_STATIC_SHARED))


def render_cpp_launch(
    *,
    kernel_name: str,
    cubin: bytes,
    signature: Sequence[str],
    values: Sequence[Any],
    num_tensors: int,
    grid: int,
    num_warps: int,
    shared: int,
    device: int,
    scratch_params: int = 0,
    tensor_args: Sequence[int] | None = None,
) -> plugin.CppLaunch:
    """The ``CppLaunch`` of one compiled kernel.

    ``signature`` is the Triton type of every declared argument in order (``"*fp32"``,
    ``"i32"``, ``"constexpr"``); ``values`` their values at build time, the first
    ``num_tensors`` being the tensors the wrapper passes (any object there: only the
    others are read, and baked as constants). ``scratch_params`` zero pointers follow the
    declared parameters (Triton's global/profile scratch slots). ``tensor_args`` maps
    each of the first ``num_tensors`` declared arguments to the index of the launch
    function's tensor parameter that feeds it (default: the same index; a GEMM template
    takes its tensors in ``Choice`` order, which is not its kernel's). Raises
    ``ValueError`` for a parameter type it cannot write or a bad mapping.
    """
    if len(signature) != len(values):
        raise ValueError(f"{kernel_name}: {len(values)} values for {len(signature)} arguments")
    feeds = list(range(num_tensors)) if tensor_args is None else [int(i) for i in tensor_args]
    if len(feeds) != num_tensors or sorted(feeds) != list(range(num_tensors)):
        raise ValueError(f"{kernel_name}: tensor_args {feeds} is not an order of {num_tensors}")
    setup: list[str] = []
    params: list[str] = []
    for pos, (kind, value) in enumerate(zip(signature, values)):
        if kind == "constexpr":
            continue
        slot = f"p{pos}"
        if kind.startswith("*"):
            if pos >= num_tensors:
                raise ValueError(f"{kernel_name}: pointer argument {pos} is not a tensor")
            setup.append(
                f"CUdeviceptr {slot} = tilefuse_triton_cpp::pointer(a{feeds[pos]}, kName);"
            )
        elif kind in CPP_SCALARS:
            setup.append(f"{CPP_SCALARS[kind]} {slot} = {_scalar(value)};")
        else:
            raise ValueError(f"{kernel_name}: argument type {kind!r}")
        params.append(f"&{slot}")
    for i in range(scratch_params):
        setup.append(f"CUdeviceptr scratch{i} = 0;")
        params.append(f"&scratch{i}")
    tensors = ", ".join(f"const at::Tensor& a{i}" for i in range(num_tensors))
    body = "\n".join(f"    {line}" for line in setup)
    declarations = f"""\
static const char kName[] = "{kernel_name}";

static const tilefuse_triton_cpp::Loaded& loaded() {{
    static const tilefuse_triton_cpp::Loaded k =
        tilefuse_triton_cpp::load(cubin, kName, {device}, {shared});
    return k;
}}

void launch({tensors}) {{
{body}
    void* params[] = {{{", ".join(params) or "nullptr"}}};
    tilefuse_triton_cpp::launch(loaded(), kName, {grid}, {32 * num_warps}, {shared}, {device},
                                params);
}}
"""
    return plugin.CppLaunch(
        function="launch",
        declarations=declarations,
        shared=SHARED,
        blobs={"cubin": bytes(cubin)},
        headers=HEADERS,
        include_dirs=cuda_include_dirs(),
    )


def cuda_include_dirs() -> tuple[str, ...]:
    """Where ``cuda.h`` is: the copy Triton's NVIDIA backend ships (no CUDA toolkit needed),
    or none (core adds ``/usr/local/cuda/include`` where it exists)."""
    import os

    try:
        import triton.backends.nvidia as nvidia
    except ImportError:
        return ()
    include = os.path.join(os.path.dirname(nvidia.__file__), "include")
    return (include,) if os.path.isfile(os.path.join(include, "cuda.h")) else ()


def empty_launch(num_tensors: int) -> plugin.CppLaunch:
    """The launch of a kernel over zero elements: nothing to run."""
    tensors = ", ".join(f"const at::Tensor& a{i}" for i in range(num_tensors))
    return plugin.CppLaunch(function="launch", declarations=f"void launch({tensors}) {{}}\n")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return f"{value}LL" if abs(value) > 2**31 - 1 else str(value)
    if isinstance(value, float):
        return repr(value)
    raise ValueError(f"scalar argument {value!r}")
