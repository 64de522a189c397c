"""Load a compiled kernel ``.so`` with ctypes and launch it on torch tensors.

Each ``.so`` exports four C functions (see templates/gemm_sm90.cu.j2):
``tf_gemm_workspace_size(ptrs, ints, size*)``, ``tf_gemm_run(ptrs, ints,
workspace, stream)``, ``tf_status_string(int)`` and ``tf_kernel_name()``.
``ptrs`` = A, B, C (or NULL), D, then the broadcast vectors; ``ints`` = M, N, K,
L, the (leading, batch) element strides of A, B, C and D, then each vector's
batch stride.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tilefuse.errors import ChoiceFailed

from .problem import GemmProblem, broadcast_strides

_LIBS: dict[str, ctypes.CDLL] = {}
_LOCK = threading.Lock()
_PTRS = ctypes.c_void_p * 16
_INTS = ctypes.c_int64 * 32


def load_library(path: Path) -> ctypes.CDLL:
    """The loaded ``.so`` (once per process), with its entry points typed."""
    key = str(path)
    with _LOCK:
        lib = _LIBS.get(key)
        if lib is None:
            lib = ctypes.CDLL(key)
            lib.tf_gemm_workspace_size.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_size_t),
            ]
            lib.tf_gemm_workspace_size.restype = ctypes.c_int
            lib.tf_gemm_run.argtypes = [ctypes.c_void_p] * 4
            lib.tf_gemm_run.restype = ctypes.c_int
            lib.tf_status_string.argtypes = [ctypes.c_int]
            lib.tf_status_string.restype = ctypes.c_char_p
            _LIBS[key] = lib
    return lib


def split_inputs(op: str, inputs: Sequence[Any]) -> tuple[Any, Any, list[Any]]:
    """``(a, b, extra)``: the GEMM operands and the epilogue's tensors in operand order."""
    if op == "addmm":
        return inputs[1], inputs[2], [inputs[0], *inputs[3:]]
    return inputs[0], inputs[1], list(inputs[2:])


def _mat(t: Any, batched: bool) -> tuple[int, int, int, int, int]:
    """rows, cols and (row, col, batch) strides of a 2-D or batched 3-D tensor."""
    if batched:
        return t.shape[1], t.shape[2], t.stride(1), t.stride(2), t.stride(0)
    return t.shape[0], t.shape[1], t.stride(0), t.stride(1), 0


def _lead(major_is_last: bool, rows: int, cols: int, r_st: int, c_st: int, l_st: int, batch):
    lead = r_st if major_is_last else c_st
    return lead, (l_st if batch > 1 else rows * cols)


def plan_arguments(
    problem: GemmProblem, inputs: Sequence[Any], out: Any
) -> tuple[list[Any], list[int]]:
    """``(tensors, ints)`` of one launch: the tensors in ``ptrs`` order (A, B, C or
    ``None``, D, then the vectors) and the ``ints`` array. Reads only ``.shape`` and
    ``.stride()``, so anything shaped like a tensor will do (the C++ launch passes
    specs)."""
    batched = problem.op == "bmm"
    a, b, extra = split_inputs(problem.op, inputs)
    m, k, a_r, a_c, a_l = _mat(a, batched)
    _, n, b_r, b_c, b_l = _mat(b, batched)
    _, _, d_r, d_c, d_l = _mat(out, batched)
    batch = out.shape[0] if batched else 1
    ints = [m, n, k, batch]
    ints += _lead(problem.a_major == "K", m, k, a_r, a_c, a_l, batch)
    ints += _lead(problem.b_major == "N", k, n, b_r, b_c, b_l, batch)
    d_lead = _lead(problem.d_major == "N", m, n, d_r, d_c, d_l, batch)
    source = problem.source
    c = None
    if source is not None:
        c = extra[source.index]
        c_m, c_n, c_l = broadcast_strides(tuple(c.shape), tuple(c.stride()), (batch, m, n))
        ints += _lead(source.major == "N", m, n, c_m, c_n, c_l, batch)
    else:
        ints += d_lead
    ints += d_lead
    vectors = []
    for load in problem.vectors:
        v = extra[load.index]
        _, _, v_l = broadcast_strides(tuple(v.shape), tuple(v.stride()), (batch, m, n))
        ints.append(v_l)
        vectors.append(v)
    return [a, b, c, out, *vectors], ints


def pack_arguments(problem: GemmProblem, inputs: Sequence[Any], out: Any):
    """The ``(ptrs, ints)`` arrays for one launch; raises ``ChoiceFailed`` on a bad pointer."""
    tensors, ints = plan_arguments(problem, inputs, out)
    ptrs = [t.data_ptr() if t is not None else None for t in tensors]
    for name, p in zip("ABCD", ptrs):
        if p is not None and p % 16:
            raise ChoiceFailed(f"{name} at {p:#x} is not 16-byte aligned (TMA needs that)")
    return _PTRS(*ptrs), _INTS(*ints)


def launch(lib: ctypes.CDLL, problem: GemmProblem, inputs: Sequence[Any], out: Any) -> None:
    """Run the kernel on the current stream of ``out``'s device; ``ChoiceFailed`` on error."""
    import torch

    ptrs, ints = pack_arguments(problem, inputs, out)
    size = ctypes.c_size_t(0)
    status = lib.tf_gemm_workspace_size(ptrs, ints, ctypes.byref(size))
    if status != 0:
        raise ChoiceFailed(f"CUTLASS cannot run this problem: {_text(lib, status)}")
    workspace = None
    if size.value:
        workspace = torch.empty(size.value, dtype=torch.uint8, device=out.device)
    stream = torch.cuda.current_stream(out.device).cuda_stream
    ws_ptr = workspace.data_ptr() if workspace is not None else None
    status = lib.tf_gemm_run(ptrs, ints, ws_ptr, stream)
    if status != 0:
        raise ChoiceFailed(f"CUTLASS launch failed: {_text(lib, status)}")


def _text(lib: ctypes.CDLL, status: int) -> str:
    raw = lib.tf_status_string(status)
    return f"{raw.decode() if raw else 'unknown'} (status {status})"
