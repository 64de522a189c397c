"""Launch a compiled Triton kernel's cubin through the CUDA driver API (ctypes).

Why: Triton's own launch path re-derives the specialization key in Python on every call,
and Triton 3.6 and older also build a C launcher with the host compiler the first time
each argument signature is seen (about 0.23 s per signature on an H100 host: most of a
one-kernel graph's cold compile). ``CubinLauncher`` loads the cubin once and calls
``cuLaunchKernel`` directly.

Contract: ``CubinLauncher.create(compiled)`` returns a launcher, or ``None`` with
``unsupported_reason(compiled)`` saying why (not a CUDA cubin, scratch memory, launch
hooks, clusters, an argument type it does not know); callers then keep Triton's launch
path. ``launcher(grid, stream, values)`` takes every declared argument's value in declaration
order (``tl.constexpr`` ones included); it launches only when the values have the
specialization the cubin was compiled for (``specialization_key``), and returns
``False`` without launching otherwise.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

# Triton signature type -> ctypes constructor of the kernel parameter.
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "i1": ctypes.c_int8, "i8": ctypes.c_int8, "i16": ctypes.c_int16, "i32": ctypes.c_int32,
    "i64": ctypes.c_int64, "u1": ctypes.c_uint8, "u8": ctypes.c_uint8, "u16": ctypes.c_uint16,
    "u32": ctypes.c_uint32, "u64": ctypes.c_uint64, "fp32": ctypes.c_float,
    "f32": ctypes.c_float, "fp64": ctypes.c_double, "f64": ctypes.c_double,
}  # fmt: skip
_MAX_STATIC_SHARED = 48 * 1024
_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_SCRATCH_FIELDS = ("global_scratch_size", "profile_scratch_size")

_driver: Any = None


def _cuda() -> Any:
    """The CUDA driver library (loaded once); raises ``OSError`` where there is none."""
    global _driver
    if _driver is None:
        lib = ctypes.CDLL("libcuda.so.1")
        lib.cuLaunchKernel.argtypes = [
            ctypes.c_void_p, *[ctypes.c_uint] * 6, ctypes.c_uint, ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
        ]  # fmt: skip
        _driver = lib
    return _driver


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"CUDA driver error {status} in {what}")


def _launch_hooks_set() -> bool:
    try:
        from triton import knobs
    except ImportError:
        return False
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    return any(h is not None and getattr(h, "calls", True) for h in hooks)


def param_types(compiled: Any) -> list[str]:
    """Types of the kernel's parameters, in order: declared arguments that are neither
    ``tl.constexpr`` nor specialized to a constant (both are typed ``"constexpr"``)."""
    return [t for t in compiled.src.signature.values() if t != "constexpr"]


def unsupported_reason(compiled: Any) -> str | None:
    """Why ``compiled`` cannot be launched from its cubin, or ``None`` when it can."""
    metadata = compiled.metadata
    if "cubin" not in getattr(compiled, "asm", {}):
        return "no cubin (not a CUDA kernel)"
    if not isinstance(getattr(compiled.src, "signature", None), dict):
        return "a Triton release whose signature is not keyed by argument name"
    for field in _SCRATCH_FIELDS:
        if getattr(metadata, field, 0):
            return f"the kernel needs {field.removesuffix('_size')} memory"
    if getattr(metadata, "num_ctas", 1) != 1:
        return "thread-block clusters"
    if getattr(metadata, "tensordesc_meta", None):
        return "tensor descriptor arguments"
    for t in param_types(compiled):
        if not (t.startswith("*") or t in _SCALARS):
            return f"argument type {t!r}"
    if _launch_hooks_set():
        return "Triton launch hooks are set"
    return None


def specialization_key(values: Sequence[Any]) -> tuple[Any, ...]:
    """What a cubin is tied to: each tensor's device and 16-byte alignment (which Triton
    specializes on), and each integer's ``== 1`` and divisibility by 16 (likewise)."""
    key: list[Any] = []
    for v in values:
        if hasattr(v, "data_ptr"):
            key.append((v.device.index, v.data_ptr() % 16 == 0))
        elif isinstance(v, bool) or not isinstance(v, int):
            key.append(None)
        else:
            key.append((v == 1, v % 16 == 0))
    return tuple(key)


class CubinLauncher:
    """One compiled kernel, loaded into the current CUDA context."""

    def __init__(self, compiled: Any, key: tuple[Any, ...]) -> None:
        metadata = compiled.metadata
        self.name: str = metadata.name
        self.block = 32 * int(metadata.num_warps)
        self.shared = int(metadata.shared)
        self.key = key
        # (position among the declared arguments, ctypes constructor) of each parameter
        self._ctors: list[tuple[int, Callable[[Any], Any]]] = [
            (pos, ctypes.c_uint64 if t.startswith("*") else _SCALARS[t])
            for pos, t in enumerate(compiled.src.signature.values())
            if t != "constexpr"
        ]
        self._extra = sum(1 for f in _SCRATCH_FIELDS if hasattr(metadata, f))
        self._function = self._load(compiled.asm["cubin"])

    def _load(self, cubin: bytes) -> ctypes.c_void_p:
        lib = _cuda()
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        _check(lib.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
        self._module = module
        _check(
            lib.cuModuleGetFunction(ctypes.byref(function), module, self.name.encode()),
            "cuModuleGetFunction",
        )
        if self.shared > _MAX_STATIC_SHARED:
            _check(
                lib.cuFuncSetAttribute(
                    function, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, self.shared
                ),
                "cuFuncSetAttribute",
            )
        return function

    @classmethod
    def create(cls, compiled: Any, values: Sequence[Any]) -> CubinLauncher | None:
        """A launcher for ``compiled`` as called with ``values``, or ``None`` when
        ``unsupported_reason`` names a reason or the driver cannot load it."""
        if unsupported_reason(compiled) is not None:
            return None
        try:
            return cls(compiled, specialization_key(values))
        except (OSError, RuntimeError, KeyError, AttributeError):
            return None

    def __call__(self, grid: Sequence[int], stream: int, values: Sequence[Any]) -> bool:
        """Launch on ``stream`` with ``values`` (every declared argument, in order);
        ``False`` (nothing launched) when their specialization differs."""
        if specialization_key(values) != self.key:
            return False
        params = []
        for pos, ctor in self._ctors:
            v = values[pos]
            params.append(ctor(v.data_ptr() if hasattr(v, "data_ptr") else v))
        params += [ctypes.c_uint64(0)] * self._extra
        pointers = (ctypes.c_void_p * len(params))(*[ctypes.addressof(p) for p in params])
        gx, gy, gz = (*grid, 1, 1)[:3]
        _check(
            _cuda().cuLaunchKernel(
                self._function, gx, gy, gz, self.block, 1, 1, self.shared, stream, pointers, None
            ),
            f"cuLaunchKernel({self.name})",
        )
        return True
