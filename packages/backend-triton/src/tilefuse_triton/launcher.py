"""Launch a compiled Triton kernel's cubin through the CUDA driver API (ctypes).

Why: Triton's own launch path re-derives the specialization key in Python on every call,
and Triton 3.6 and older also build a C launcher with the host compiler the first time
each argument signature is seen (about 0.23 s per signature on an H100 host: most of a
one-kernel graph's cold compile). ``CubinLauncher`` loads the cubin once and calls
``cuLaunchKernel`` directly.

Contract: ``CubinLauncher.create(compiled, values)`` returns a launcher, or ``None`` with
``unsupported_reason(compiled)`` saying why (not a CUDA cubin, scratch memory, launch
hooks, clusters, an argument type it does not know); callers then keep Triton's launch
path. ``launcher(grid, stream, values)`` takes every declared argument's value in declaration
order (``tl.constexpr`` ones included); it launches only when the values have the
specialization the cubin was compiled for (tensor device and 16-byte alignment, integer
``== 1`` and divisibility by 16, constexpr values), and returns ``False`` without
launching otherwise, or when the calling thread has no CUDA context it can bind (the
device's primary context is bound where none is current, as Triton does). Per call it
only checks those and fills preallocated parameter slots.
"""

from __future__ import annotations

import ctypes
import threading
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
_CUDA_ERROR_INVALID_CONTEXT = 201
_CONTEXT_ERRORS = (_CUDA_ERROR_INVALID_CONTEXT, 400)  # 400: CUDA_ERROR_INVALID_HANDLE
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


def _untyped_launch() -> Any:
    """``cuLaunchKernel`` without ctypes argument types, for callers that pass the handle,
    stream and parameter array as ctypes objects and every other argument as a small
    non-negative int (a C ``int``, as the ABI passes an ``unsigned int``): about half the
    per-call conversion cost of the typed function."""
    lib = _cuda()
    make = getattr(lib, "_FuncPtr", None)
    return make(("cuLaunchKernel", lib)) if make is not None else lib.cuLaunchKernel


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


def _int_class(v: int) -> tuple[bool, bool, bool]:
    """What Triton specializes an integer on: ``== 1``, divisibility by 16, and whether it
    fits the 32-bit parameter type (``i32``; a larger value makes the parameter ``i64``,
    another cubin: packing it into this one's 32-bit slot would cut it)."""
    return v == 1, v % 16 == 0, -(2**31) <= v < 2**31


def _bind_context(device: int) -> None:
    """Make ``device``'s primary context (the one PyTorch and Triton use) current in this
    thread, where no context is. A thread that has made no CUDA runtime call yet (a compile
    worker, say) has none, and ``cuModuleLoadData`` then fails with
    CUDA_ERROR_INVALID_CONTEXT (201)."""
    lib = _cuda()
    current = ctypes.c_void_p()
    _check(lib.cuCtxGetCurrent(ctypes.byref(current)), "cuCtxGetCurrent")
    if current.value:
        return
    handle, primary = ctypes.c_int(), ctypes.c_void_p()
    _check(lib.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    _check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(primary), handle), "cuDevicePrimaryCtxRetain")
    _check(lib.cuCtxSetCurrent(primary), "cuCtxSetCurrent")


class CubinLauncher:
    """One compiled kernel, loaded into the current CUDA context, tied to the
    specialization of the call it was created for (tensor device and 16-byte alignment,
    integer class, constexpr values)."""

    def __init__(self, compiled: Any, values: Sequence[Any]) -> None:
        metadata = compiled.metadata
        self.name: str = metadata.name
        self.block = 32 * int(metadata.num_warps)
        self.shared = int(metadata.shared)
        types = list(compiled.src.signature.values())
        if len(types) != len(values):
            raise ValueError(f"{self.name}: {len(values)} values for {len(types)} arguments")
        self._tensors: list[tuple[int, Any, int, bool]] = []  # pos, slot, device, aligned
        self._scalars: list[tuple[int, Any, Any]] = []  # pos, slot, integer class or None
        self._fixed: list[tuple[int, Any]] = []  # pos, value (constexpr: not a parameter)
        slots: list[Any] = []
        for pos, (t, v) in enumerate(zip(types, values)):
            if t == "constexpr":
                self._fixed.append((pos, v))
                continue
            slot = (ctypes.c_uint64 if t.startswith("*") else _SCALARS[t])()
            slots.append(slot)
            if t.startswith("*"):
                self._tensors.append((pos, slot, v.get_device(), v.data_ptr() % 16 == 0))
            else:
                is_int = isinstance(v, int) and not isinstance(v, bool)
                self._scalars.append((pos, slot, _int_class(v) if is_int else None))
        slots += [ctypes.c_uint64(0) for f in _SCRATCH_FIELDS if hasattr(metadata, f)]
        self._slots = slots  # keeps the storage the parameter array points at alive
        self._params = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(x) for x in slots])
        self._lock = threading.Lock()  # the slots are shared by every call
        devices = [device for _pos, _slot, device, _aligned in self._tensors]
        self._device = devices[0] if devices else 0
        self.device = self._device  # the device index the cubin is loaded on
        self._function = self._load(compiled.asm["cubin"], self._device)

    def _load(self, cubin: bytes, device: int) -> ctypes.c_void_p:
        lib = _cuda()
        _bind_context(device)
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
            return cls(compiled, values)
        except (OSError, RuntimeError, ValueError, KeyError, AttributeError):
            return None

    def __call__(self, grid: Sequence[int], stream: int, values: Sequence[Any]) -> bool:
        """Launch on ``stream`` with ``values`` (every declared argument, in order);
        ``False`` (nothing launched) when their specialization differs."""
        for pos, expected in self._fixed:
            if values[pos] != expected:
                return False
        with self._lock:
            for pos, slot, device, aligned in self._tensors:
                v = values[pos]
                ptr = v.data_ptr()
                if (ptr % 16 == 0) != aligned or v.get_device() != device:
                    return False
                slot.value = ptr
            for pos, slot, int_class in self._scalars:
                v = values[pos]
                if int_class is not None and _int_class(v) != int_class:
                    return False
                slot.value = v
            status = self._launch(grid, stream)
            if status == _CUDA_ERROR_INVALID_CONTEXT:
                # A thread with no current context (autograd's device threads run the
                # backward): bind the primary one, as Triton's own launcher does, once.
                try:
                    _bind_context(self._device)
                except RuntimeError:
                    return False  # Triton's own path binds it or reports why it cannot
                status = self._launch(grid, stream)
        if status in _CONTEXT_ERRORS:
            # The current context is not the one the cubin was loaded into (another
            # device's): nothing launched, the caller takes Triton's own launch path.
            return False
        _check(status, f"cuLaunchKernel({self.name})")
        return True

    def static_entry(
        self, values: Sequence[Any], grid: Sequence[int], current_stream: Callable[[int], int]
    ) -> Callable[..., bool] | None:
        """A launch function for calls that pass ``values`` apart from their tensors (a
        kernel of static sizes; or one size of a kernel of symbolic sizes, whose extents
        and grid follow from its sizes): ``entry(*tensors)`` launches on
        ``current_stream(device)`` and returns ``True``, or returns ``False`` without
        launching when a tensor is not 16-byte aligned, the first tensor is on another
        device, or the driver refuses (the caller's general path then decides).

        Straight-line code made for this kernel: no per-call loops, no checks of values
        that cannot change; the non-tensor parameters are constants written into their
        slots under the lock, so entries for other values (and the general path) can share
        this launcher. ``None`` when the launcher's specialization does not fit (a tensor
        after a non-tensor argument, an unaligned tensor, ``values`` that are not this
        launcher's)."""
        count = len(self._tensors)
        if [pos for pos, *_ in self._tensors] != list(range(count)):
            return None
        if not all(aligned for *_, aligned in self._tensors):
            return None
        if any(values[pos] != expected for pos, expected in self._fixed):
            return None
        for pos, _slot, int_class in self._scalars:
            v = values[pos]
            if int_class is not None and _int_class(v) != int_class:
                return None
        names = [f"t{i}" for i in range(count)]
        gx, gy, gz = (*grid, 1, 1)[:3]
        lines = [f"def entry({', '.join(names)}):"]
        lines += [f"    p{i} = t{i}.data_ptr()" for i in range(count)]
        if count:
            lines.append(f"    if ({' | '.join(f'p{i}' for i in range(count))}) & 15:")
            lines.append("        return False")
            lines.append(f"    if t0.get_device() != {self._device}:")
            lines.append("        return False")
        lines.append("    with lock:")
        lines += [f"        slot{i}.value = p{i}" for i in range(count)]
        lines += [f"        scalar{j}.value = value{j}" for j in range(len(self._scalars))]
        lines.append(
            f"        status = launch(function, {gx}, {gy}, {gz}, {self.block}, 1, 1, "
            f"{self.shared}, c_void_p(current_stream({self._device})), params, None)"
        )
        lines.append("    return status == 0")
        namespace: dict[str, Any] = {
            "lock": self._lock,
            "launch": _untyped_launch(),
            "c_void_p": ctypes.c_void_p,
            "function": self._function,
            "params": self._params,
            "current_stream": current_stream,
            **{f"slot{i}": slot for i, (_pos, slot, _dev, _al) in enumerate(self._tensors)},
            **{f"scalar{j}": slot for j, (_pos, slot, _cls) in enumerate(self._scalars)},
            **{f"value{j}": values[pos] for j, (pos, _slot, _cls) in enumerate(self._scalars)},
        }
        exec(compile("\n".join(lines) + "\n", f"<launch {self.name}>", "exec"), namespace)
        return namespace["entry"]

    def _launch(self, grid: Sequence[int], stream: int) -> int:
        gx, gy, gz = (*grid, 1, 1)[:3]
        return _cuda().cuLaunchKernel(
            self._function, gx, gy, gz, self.block, 1, 1, self.shared, stream,
            self._params, None,
        )  # fmt: skip
