"""``GemmShape``: one GEMM request (op, input specs, output spec, epilogue), checked once.

Every GEMM template provider receives the same request through the plugin surface
(``ChoiceProvider.accepts``/``choices``): the op's ``TensorSpec``s, then the epilogue's
operands, plus the output spec and the ``Epilogue``. ``GemmShape.of`` is the one place
that validates that request and names its parts (A, B, the output, addmm's bias, the
epilogue operands), sizes and operand majorness. A backend builds its own problem
(what its template specialises on) from a ``GemmShape`` and checks only what is
particular to it (dtypes it renders, alignment, epilogue steps it can express).

Re-exported as ``tilefuse.plugin.GemmShape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import Unsupported
from .plugin import GEMM_OPS, Epilogue, TensorSpec

# Dtypes a GEMM template may read or write; a backend may serve fewer.
GEMM_FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def majorness(shape: Sequence[int], stride: Sequence[int]) -> str:
    """How the last two dims of a tensor lie in memory.

    ``"row"`` when the last dim is contiguous (or has one element), ``"col"`` when the
    one before it is, else ``"strided"``. A matrix with both dims contiguous (a vector)
    is ``"row"``.
    """
    rows, cols = shape[-2], shape[-1]
    if stride[-1] == 1 or cols == 1:
        return "row"
    if stride[-2] == 1 or rows == 1:
        return "col"
    return "strided"


def matrix_strides(spec: TensorSpec) -> tuple[int, int, int]:
    """``(row, col, batch)`` strides of a 2-d or 3-d ``spec`` (batch stride 0 for 2-d)."""
    if len(spec.stride) == 3:
        return spec.stride[1], spec.stride[2], spec.stride[0]
    return spec.stride[0], spec.stride[1], 0


def broadcasts_to(spec: TensorSpec, out_shape: Sequence[int]) -> bool:
    """Whether ``spec`` broadcasts to ``out_shape`` as torch broadcasting defines it."""
    if len(spec.shape) > len(out_shape):
        return False
    tail = tuple(out_shape)[len(out_shape) - len(spec.shape) :]
    return all(size in (1, want) for size, want in zip(spec.shape, tail, strict=True))


@dataclass(frozen=True)
class GemmShape:
    """A validated GEMM request: ``out = epilogue(bias + a @ b)``.

    ``op`` is a ``plugin.GEMM_OPS`` key; ``a`` is ``[M, K]`` (``[batch, M, K]`` for
    ``bmm``), ``b`` ``[K, N]``, ``out`` ``[M, N]`` (the request's ``layout``).
    ``batch`` is 1 unless ``bmm``. ``bias`` is addmm's first input (broadcast to the
    output), else ``None``. ``operands`` are the epilogue's tensors, in the order they
    follow the op's inputs at run time. ``a_major``/``b_major``/``out_major`` are
    ``majorness`` of each matrix: ``"row"``, ``"col"`` or ``"strided"``.
    """

    op: str
    m: int
    n: int
    k: int
    batch: int
    a: TensorSpec
    b: TensorSpec
    out: TensorSpec
    bias: TensorSpec | None
    operands: tuple[TensorSpec, ...]
    epilogue: Epilogue
    a_major: str
    b_major: str
    out_major: str

    @property
    def extras(self) -> tuple[TensorSpec, ...]:
        """Every tensor the epilogue reads, in launch order: addmm's bias, then operands."""
        return ((self.bias,) if self.bias is not None else ()) + self.operands

    @classmethod
    def of(
        cls,
        op: str,
        inputs: Sequence[TensorSpec],
        layout: TensorSpec,
        epilogue: Epilogue,
    ) -> GemmShape:
        """Validate a request; raises ``tilefuse.errors.Unsupported`` saying what is wrong.

        ``inputs`` follows ``plugin.Choice``: ``mm (a, b)``, ``addmm (bias, a, b)``,
        ``bmm (a, b)``, then ``epilogue.operands``. Checked: the op is known, the input
        count, ranks (3 for ``bmm``, else 2), float dtypes (``GEMM_FLOAT_DTYPES``) for
        every tensor, that the sizes chain, that the bias and operands broadcast to the
        output, and that ``epilogue.out_dtype`` (when set) is the output's dtype.
        ``operands`` are taken from ``inputs`` (the specs of the tensors passed at run
        time); ``epilogue.operands`` says how many there are.
        """
        if op not in GEMM_OPS:
            raise Unsupported(f"op {op!r} is not one of {tuple(GEMM_OPS)}")
        n_op = GEMM_OPS[op]
        n_extra = len(epilogue.operands)
        if len(inputs) != n_op + n_extra:
            raise Unsupported(
                f"{op} takes {n_op} inputs plus {n_extra} epilogue operands, "
                f"got {len(inputs)} input specs"
            )
        a, b = inputs[n_op - 2], inputs[n_op - 1]
        bias = inputs[0] if op == "addmm" else None
        rank = 3 if op == "bmm" else 2
        for name, spec in (("a", a), ("b", b), ("the output", layout)):
            if len(spec.shape) != rank or len(spec.stride) != rank:
                raise Unsupported(f"{op} needs rank-{rank} operands; {name} has shape {spec.shape}")
        named = [("a", a), ("b", b), ("the output", layout)]
        named += [("the bias", bias)] if bias is not None else []
        operands = tuple(inputs[n_op:])
        named += [(f"epilogue operand {i}", s) for i, s in enumerate(operands)]
        for name, spec in named:
            if spec.dtype not in GEMM_FLOAT_DTYPES:
                raise Unsupported(f"{name} has dtype {spec.dtype}, not one of {GEMM_FLOAT_DTYPES}")
        if epilogue.out_dtype is not None and epilogue.out_dtype != layout.dtype:
            raise Unsupported(
                f"the epilogue stores {epilogue.out_dtype} but the output is {layout.dtype}"
            )
        m, k = a.shape[-2:]
        k2, n = b.shape[-2:]
        batch = a.shape[0] if op == "bmm" else 1
        if k != k2 or tuple(layout.shape[-2:]) != (m, n):
            raise Unsupported(f"shapes {a.shape} @ {b.shape} -> {layout.shape} do not chain")
        if op == "bmm" and not b.shape[0] == batch == layout.shape[0]:
            raise Unsupported(f"bmm batch sizes differ: {a.shape}, {b.shape}, {layout.shape}")
        for name, spec in named[3:]:
            if not broadcasts_to(spec, layout.shape):
                raise Unsupported(
                    f"{name} of shape {spec.shape} does not broadcast to {layout.shape}"
                )
        return cls(
            op=op,
            m=m,
            n=n,
            k=k,
            batch=batch,
            a=a,
            b=b,
            out=layout,
            bias=bias,
            operands=operands,
            epilogue=epilogue,
            a_major=majorness(a.shape, a.stride),
            b_major=majorness(b.shape, b.stride),
            out_major=majorness(layout.shape, layout.stride),
        )


def tf32_matmuls() -> bool:
    """Whether torch lets float32 matmuls on CUDA use TF32: what a float32 GEMM choice, and
    its measurement, must follow. Read through ``torch.backends.cuda.matmul.fp32_precision``
    where torch has it (``"tf32"``; reading the legacy ``allow_tf32`` raises once the new
    setting was used), else ``allow_tf32``."""
    import warnings

    import torch

    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if isinstance(precision, str):
        return precision == "tf32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(matmul.allow_tf32)


def set_tf32_matmuls(enabled: bool) -> None:
    """Let float32 matmuls on CUDA use TF32 or not, through the same setting
    ``tf32_matmuls`` reads."""
    import torch

    matmul = torch.backends.cuda.matmul
    if isinstance(getattr(matmul, "fp32_precision", None), str):
        try:
            matmul.fp32_precision = "tf32" if enabled else "ieee"
            return
        except (RuntimeError, ValueError, TypeError):  # a torch that names it otherwise
            pass
    matmul.allow_tf32 = enabled
