"""``ExternChoice``: a GEMM op run by eager torch, then its epilogue's reference meaning.

Published as ``tilefuse.plugin.ExternChoice`` (loaded lazily): the correctness reference
every autotune candidate is measured against, and what core runs for a GEMM template
that no ``TemplateSelector`` takes. On CUDA it pads an N that cuBLAS serves only slowly
(``_padded_width``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .plugin import GEMM_OPS, Epilogue


class ExternChoice:
    """The eager torch ``Choice`` for a GEMM op: ``torch.<op>``, then ``Epilogue.apply_reference``.

    It is the correctness reference the autotuner measures every candidate against, and
    what core runs for a template that no ``TemplateSelector`` takes. Picklable;
    ``compile()`` does nothing. Inputs follow the ``Choice`` conventions: the op's
    tensors, then the epilogue's operands. Raises ``ValueError`` for an op not in
    ``GEMM_OPS``. One instance runs any sizes (``any_size``, see ``plugin.Choice``).
    """

    any_size = True

    def __init__(self, op: str, epilogue: Epilogue | None = None) -> None:
        if op not in GEMM_OPS:
            raise ValueError(f"unknown op {op!r}; the extern choice knows {sorted(GEMM_OPS)}")
        self.op = op
        self.epilogue = epilogue if epilogue is not None else Epilogue()
        self.name = f"torch.{op}"

    def compile(self) -> None:
        return None

    def run(self, *inputs: Any, out: Any) -> None:
        import torch

        fn = getattr(torch, self.op)
        n = GEMM_OPS[self.op]
        op_inputs, operands = inputs[:n], inputs[n:]
        epi = self.epilogue
        width = _padded_width(self.op, op_inputs[-1], out)
        if width is not None and not epi.steps and _reads_aligned(self.op, op_inputs[-1]):
            _split_columns(op_inputs[0], op_inputs[-1], out, width)
            return
        if width is not None:  # N padded with zero columns of B, the result sliced back
            op_inputs = (*op_inputs[:-1], _pad_columns(op_inputs[-1], width))
        elif (block := _aligned_block(self.op, *op_inputs)) is not None:
            _run_in_blocks(op_inputs, block, epi, operands, out)
            return
        # In place only when ``out`` has the op's own dtype (an epilogue may be a bare cast,
        # e.g. autocast's bf16 GEMM stored as float32).
        if (
            width is None
            and not epi.steps
            and out.dtype == op_inputs[-1].dtype
            and out.is_contiguous()
        ):
            fn(*op_inputs, out=out)  # written in place: no extra pass over the output
            return
        if not epi.steps:
            out.copy_(_narrow_columns(fn(*op_inputs), out))
            return
        acc = _narrow_columns(_float32_accumulator(fn, op_inputs), out)
        out.copy_(epi.apply_reference(acc, operands))

    def direct_op(self, b: Any, out: Any) -> Callable[..., Any] | None:
        """``torch.<op>`` when ``run`` would call it as ``op(*inputs, out=out)`` and do
        nothing else, for any call with these layouts (``b``: the last op input's, ``out``:
        the result's; objects with ``dtype``, ``device``, ``size`` and ``stride``, sizes
        static): no epilogue, the op's own dtype, a contiguous result, no padded N.
        Else ``None``."""
        import torch

        from .ir.nodes import contiguous_strides

        if self.epilogue.steps or out.dtype != b.dtype:
            return None
        if not all(isinstance(v, int) or getattr(v, "is_Integer", False)
                   for v in (*out.size, *out.stride)):  # fmt: skip
            return None
        size = [int(n) for n in out.size]
        want = contiguous_strides(size)
        if any(n != 1 and a != w for n, a, w in zip(size, out.stride, want, strict=True)):
            return None
        device = torch.device(out.device).type
        padded = padded_width(b.dtype, size[-1], math.prod(size))
        if device == "cuda" and self.op in ("mm", "bmm") and padded:
            return None
        if device in BLOCKED_DEVICES and self.op == "mm" and _may_run_in_blocks(b, size):
            return None
        return getattr(torch, self.op)

    def __repr__(self) -> str:
        return f"ExternChoice({self.op!r})"


# Where ``_aligned_block`` splits a GEMM (cuBLAS's alignment rule); tests add the CPU.
BLOCKED_DEVICES = ("cuda",)
# Below this many result elements an odd N is not worth a padded copy of B. The C++
# wrapper's ``mm_into`` (codegen/cpp_wrapper.py) makes the same choices for ``mm``.
_PAD_MIN_ELEMENTS = 1 << 20


def padded_width(dtype: Any, n: int, numel: int) -> int | None:
    """The row length (a multiple of 16 bytes) a CUDA GEMM of ``dtype`` with an N of
    ``n`` and ``numel`` result elements runs at, or ``None`` to run it as it is.

    cuBLAS serves an N that is no multiple of 16 bytes only with its 1-element-aligned
    kernels: GPT-2's LM head (4096 x 768 x 50257, bf16) takes 3.4 ms on an H200, where a
    padded N costs a copy of B (or a second small GEMM) and of the result. The lowering
    gives a large such ``mm`` a result with rows of this length (``ExternChoice.run``
    then writes it in place); ``ExternChoice.run`` pads any other.
    """
    import torch

    if numel < _PAD_MIN_ELEMENTS or dtype not in (torch.float16, torch.bfloat16):
        return None
    per_16_bytes = 16 // dtype.itemsize
    if n % per_16_bytes == 0:
        return None
    return -(-n // per_16_bytes) * per_16_bytes


def _padded_width(op: str, b: Any, out: Any) -> int | None:
    """``padded_width`` for a CUDA ``mm``/``bmm`` writing ``out`` (N is its last size).
    The GEMM's own dtype is ``b``'s (``out`` may hold an epilogue's cast)."""
    if op not in ("mm", "bmm") or not out.is_cuda:
        return None
    return padded_width(b.dtype, out.shape[-1], out.numel())


def _reads_aligned(op: str, b: Any) -> bool:
    """Whether ``mm``'s ``b`` is column-major (``w.t()`` of an ``nn.Linear`` or a tied
    embedding) with a 16-byte-aligned start and leading dimension: then any leading
    block of its columns is an aligned operand as it is (``_split_columns``)."""
    column_major = b.stride(-2) == 1 and b.stride(-1) != 1
    return op == "mm" and column_major and _aligned_operand(b)


def _aligned_block(op: str, *inputs: Any) -> tuple[str, int] | None:
    """For a large half-precision CUDA ``mm`` whose operands have 16-byte-aligned starts
    and leading dimensions but whose K, or M where ``a`` is column-major, is no multiple
    of 16 bytes (a language model's head in the backward, reading the logits' gradient
    with padded rows: ``frontend.gemm_rows``): ``("k", n)`` or ``("m", n)``, with ``n``
    that dimension's largest aligned length, which ``_run_in_blocks`` runs as a GEMM of
    cuBLAS's aligned kernels plus a thin one for the rest. Else ``None``."""
    if op != "mm" or len(inputs) != 2:
        return None
    a, b = inputs
    if a.device.type not in BLOCKED_DEVICES or not (_aligned_operand(a) and _aligned_operand(b)):
        return None
    (m, k), n = a.shape, b.shape[-1]
    per = 16 // a.element_size()
    big = max(m * n, m * k)
    # K matters where an operand holds it contiguously (a row-major a, a column-major b).
    k_contiguous = a.stride(1) == 1 or b.stride(0) == 1
    if k_contiguous and k >= per and padded_width(a.dtype, k, big) is not None:
        return ("k", k - k % per)
    column_major = a.stride(0) == 1 and a.stride(1) != 1
    if column_major and m >= per and padded_width(a.dtype, m, big) is not None:
        return ("m", m - m % per)
    return None


def _may_run_in_blocks(b: Any, out_size: Sequence[int]) -> bool:
    """Whether some ``a`` could make ``_aligned_block`` split an ``mm`` with this ``b``
    (a ``Layout``) and result size: its K or M is a slow length (judged at the largest
    operand size the call could have)."""
    k_size = b.size[0]
    if not (isinstance(k_size, int) or getattr(k_size, "is_Integer", False)):
        return True  # a symbolic K: ``run`` decides at each call
    k, (m, n) = int(k_size), out_size
    big = max(m * n, m * k)
    return any(padded_width(b.dtype, d, big) is not None for d in (k, m))


def _aligned_operand(t: Any) -> bool:
    """Whether the 2-D ``t`` is row- or column-major with a 16-byte-aligned start and
    leading dimension."""
    if t.dim() != 2 or 1 not in t.stride():
        return False
    lead = t.stride(0) if t.stride(1) == 1 else t.stride(1)
    return (lead * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0


def _run_in_blocks(
    inputs: Sequence[Any], block: tuple[str, int], epi: Epilogue, operands: Any, out: Any
) -> None:
    """``out = epilogue(a @ b)`` with the dimension ``block`` names split at its aligned
    length. Split along K, the two partial products add in a float32 accumulator, so the
    result is rounded once, as one GEMM's; split along M, each block of rows is its own
    GEMM. Without epilogue steps the result is rounded to the GEMM's dtype before it is
    stored, as eager's ``mm`` then a cast does."""
    import torch

    a, b = inputs
    dim, cut = block
    if dim == "k":
        acc = _float32_accumulator(torch.mm, (a[:, :cut], b[:cut]))
        acc.addmm_(a[:, cut:].float(), b[cut:].float())
    else:
        rows = (slice(0, cut), slice(cut, a.shape[0]))
        if not epi.steps:
            dst = out if out.dtype == b.dtype else out.new_empty(out.shape, dtype=b.dtype)
            for r in rows:
                torch.mm(a[r], b, out=dst[r])
            if dst is not out:
                out.copy_(dst)
            return
        acc = out.new_empty(out.shape, dtype=torch.float32)
        for r in rows:
            acc[r] = _float32_accumulator(torch.mm, (a[r], b))
    if epi.steps:
        out.copy_(epi.apply_reference(acc, operands))
    else:  # rounded to the GEMM's dtype (one pass where that is out's own)
        out.copy_(acc if out.dtype == b.dtype else acc.to(b.dtype))


def _split_columns(a: Any, b: Any, out: Any, width: int) -> None:
    """``out = a @ b`` for an aligned column-major ``b`` with an odd N, without copying
    ``b``: its largest 16-byte-multiple of columns and the few left over run as two
    GEMMs into rows padded to ``width`` (each GEMM's N and leading dimensions aligned,
    which cuBLAS needs for its fast kernels). Those rows are ``out``'s own when the
    lowering gave it that row stride (``padded_width``); else a temporary copied into it."""
    import torch

    n = out.shape[-1]
    aligned = n - n % (16 // b.element_size())
    if _has_row_stride(out, width) and out.dtype == b.dtype:
        rows = out
    else:
        rows = out.new_empty((*out.shape[:-1], width), dtype=b.dtype)[:, :n]
    torch.mm(a, b[:, :aligned], out=rows[:, :aligned])
    torch.mm(a, b[:, aligned:], out=rows[:, aligned:n])
    if rows is not out:
        out.copy_(rows)


def _has_row_stride(t: Any, width: int) -> bool:
    """Whether the 2-D ``t`` is row-major with rows ``width`` elements apart, 16-byte
    aligned: a leading block of its columns is then an aligned GEMM result as it is."""
    return t.stride(-1) == 1 and t.stride(-2) == width and (t.data_ptr() % 16) == 0


def _pad_columns(b: Any, width: int) -> Any:
    """``b`` (``[..., K, N]``) with zero columns appended up to ``width``, in the same
    majorness (a transposed weight stays transposed: cuBLAS reads it without a copy).
    One copy of ``b``; only the new columns are zeroed."""
    n = b.shape[-1]
    if b.stride(-2) == 1 and b.stride(-1) != 1:  # column-major: pad rows of b^T
        rows = b.new_empty((*b.shape[:-2], width, b.shape[-2]))
        rows[..., :n, :] = b.transpose(-1, -2)
        rows[..., n:, :] = 0
        return rows.transpose(-1, -2)
    cols = b.new_empty((*b.shape[:-1], width))
    cols[..., :n] = b
    cols[..., n:] = 0
    return cols


def _narrow_columns(result: Any, out: Any) -> Any:
    """``result`` cut back to ``out``'s N (a view; unchanged when it already fits)."""
    return result if result.shape[-1] == out.shape[-1] else result[..., : out.shape[-1]]


def _float32_accumulator(fn: Callable[..., Any], inputs: Sequence[Any]) -> Any:
    """``fn(*inputs)`` as the float32 accumulator a fused epilogue reads, not rounded to a
    half-precision input dtype first (that extra rounding is what eager's ``addmm`` and a
    fused template both avoid). On CUDA through the GEMM's ``out_dtype``; elsewhere, or
    where that overload is missing, on float32 copies of the inputs."""
    import torch

    half = (torch.float16, torch.bfloat16)
    if not any(getattr(t, "dtype", None) in half for t in inputs):
        return fn(*inputs)
    if inputs[-1].is_cuda:
        try:
            return fn(*inputs, out_dtype=torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):
            pass
    return fn(*(t.float() for t in inputs))
