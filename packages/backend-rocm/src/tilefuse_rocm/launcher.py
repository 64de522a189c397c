"""Run-time side of a built kernel: argument packing and the ctypes call.

Every generated shared object exports
``int tilefuse_rocm_launch(const void* const* ptrs, const long long* ints, void* stream)``
(see the end of ``templates/gemm.hip.j2``). ``pack_arguments`` builds those two arrays from
torch tensors; it needs no GPU, so its meaning is testable anywhere.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed

from .gemm_spec import GemmProblem, broadcast_strides

LAUNCH_SYMBOL = "tilefuse_rocm_launch"


@dataclass(frozen=True)
class PackedArguments:
    """``tensors``: a, b, bias (or ``None``), out, epilogue operands (the ``ptrs`` order);
    ``ints``: M, N, K, batch, then (batch, row, col) element strides of a, b, bias, out and
    each operand."""

    tensors: tuple[Any, ...]
    ints: tuple[int, ...]


def split_inputs(problem: GemmProblem, inputs: Sequence[Any]) -> tuple[Any, Any, Any, list[Any]]:
    """``(bias or None, a, b, epilogue operands)`` from a ``Choice.run`` input list."""
    n_op = plugin.GEMM_OPS[problem.op]
    n_epi = len(problem.epilogue.operands)
    if len(inputs) != n_op + n_epi:
        raise ChoiceFailed(
            f"{problem.op} with {n_epi} epilogue operand(s) takes {n_op + n_epi} inputs, "
            f"got {len(inputs)}"
        )
    bias = inputs[0] if problem.op == "addmm" else None
    return bias, inputs[n_op - 2], inputs[n_op - 1], list(inputs[n_op:])


def _matrix_strides(t: Any) -> tuple[int, int, int]:
    s = tuple(int(x) for x in t.stride())
    return (s[0], s[1], s[2]) if t.dim() == 3 else (0, s[0], s[1])


def _check_dtype(what: str, tensor: Any, want: str) -> None:
    got = plugin.dtype_name(tensor.dtype)
    if got != want:
        raise ChoiceFailed(f"{what} is {got} but this kernel was built for {want}")


def pack_arguments(problem: GemmProblem, inputs: Sequence[Any], out: Any) -> PackedArguments:
    """Check ``inputs``/``out`` against ``problem`` and lay out the launcher's arguments.

    Raises ``ChoiceFailed`` on a count, rank, shape or dtype mismatch.
    """
    bias, a, b, ops = split_inputs(problem, inputs)
    rank = 3 if problem.op == "bmm" else 2
    if a.dim() != rank or b.dim() != rank or out.dim() != rank:
        raise ChoiceFailed(f"{problem.op} needs rank-{rank} a, b and out")
    m, k = int(a.shape[-2]), int(a.shape[-1])
    n = int(b.shape[-1])
    batch = int(a.shape[0]) if rank == 3 else 1
    if int(b.shape[-2]) != k or tuple(out.shape[-2:]) != (m, n):
        raise ChoiceFailed(
            f"shapes a{tuple(a.shape)} b{tuple(b.shape)} out{tuple(out.shape)} do not match"
        )
    if rank == 3 and (int(b.shape[0]) != batch or int(out.shape[0]) != batch):
        raise ChoiceFailed("bmm operands disagree on the batch size")
    _check_dtype("a", a, problem.a_dtype)
    _check_dtype("b", b, problem.b_dtype)
    _check_dtype("out", out, problem.out_dtype)
    out_shape = tuple(int(s) for s in out.shape)
    ints = [m, n, k, batch, *_matrix_strides(a), *_matrix_strides(b)]
    if bias is not None:
        assert problem.bias_dtype is not None
        _check_dtype("bias", bias, problem.bias_dtype)
        ints += broadcast_strides(plugin.TensorSpec.of(bias), out_shape)
    else:
        ints += (0, 0, 0)
    ints += _matrix_strides(out)
    for i, (t, spec) in enumerate(zip(ops, problem.epilogue.operands, strict=True)):
        _check_dtype(f"epilogue operand {i}", t, spec.dtype)
        ints += broadcast_strides(plugin.TensorSpec.of(t), out_shape)
    return PackedArguments((a, b, bias, out, *ops), tuple(ints))


class LoadedKernel:
    """A built shared object opened with ctypes (needs the HIP runtime library)."""

    def __init__(self, so_path: Path) -> None:
        try:
            self._lib = ctypes.CDLL(str(so_path))
        except OSError as exc:
            raise ChoiceFailed(
                f"cannot load {so_path}: {exc}; is the HIP runtime (libamdhip64) installed?"
            ) from exc
        fn = getattr(self._lib, LAUNCH_SYMBOL)
        fn.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_longlong),
            ctypes.c_void_p,
        ]
        fn.restype = ctypes.c_int
        self._fn = fn

    def launch(self, packed: PackedArguments, stream: int) -> None:
        """Launch on ``stream`` (a ``hipStream_t`` as an int); ``ChoiceFailed`` on an error."""
        ptrs = (ctypes.c_void_p * len(packed.tensors))(
            *[None if t is None else t.data_ptr() for t in packed.tensors]
        )
        ints = (ctypes.c_longlong * len(packed.ints))(*packed.ints)
        status = self._fn(ptrs, ints, ctypes.c_void_p(stream))
        if status != 0:
            raise ChoiceFailed(f"kernel launch failed with hipError {status}")


_LOADED: dict[Path, LoadedKernel] = {}
_LOCK = threading.Lock()


def load(so_path: Path) -> LoadedKernel:
    """The process-wide ``LoadedKernel`` for ``so_path`` (opened once)."""
    with _LOCK:
        kernel = _LOADED.get(so_path)
        if kernel is None:
            kernel = _LOADED[so_path] = LoadedKernel(so_path)
        return kernel
