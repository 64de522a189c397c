"""Normalise a GEMM request (op, input specs, output spec, epilogue) into a ``GemmProblem``.

A ``GemmProblem`` holds everything a template needs to be rendered (layouts,
dtypes, the epilogue as a list of visitor nodes) and nothing that changes from
call to call (sizes, leading dimensions, pointers): one compiled kernel serves
every problem of the same class. ``analyse`` raises ``tilefuse.errors.Unsupported``
with the reason when the CUTLASS templates cannot serve the request; the provider logs
the reason and yields no choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tilefuse.errors import Unsupported
from tilefuse.plugin import Epilogue, GemmShape, TensorSpec, gemm_matrix_strides

AB_DTYPES = ("bfloat16", "float16")
OUT_DTYPES = ("bfloat16", "float16", "float32")
OPERAND_DTYPES = ("bfloat16", "float16", "float32")
ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4}
UNARY_KINDS = ("relu", "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh")
ADD_KINDS = ("add_bias_n", "add_bias_m", "add_matrix")
TMA_ALIGN_BYTES = 16
MAX_VECTORS = 8


@dataclass(frozen=True)
class Load:
    """An epilogue operand read by the visitor tree.

    ``role``: ``"row"`` (a length-N vector broadcast over rows: Sm90RowBroadcast),
    ``"col"`` (a length-M vector broadcast over columns: Sm90ColBroadcast) or
    ``"matrix"`` (an M x N tensor read as the epilogue source C: Sm90SrcFetch).
    ``index`` is the operand's position among the run-time extra tensors.
    ``major`` is ``"N"`` or ``"M"`` for a matrix (which dimension is contiguous).
    """

    role: str
    index: int
    dtype: str
    major: str = ""


@dataclass(frozen=True)
class Node:
    """One epilogue step over the float32 value: ``"add"`` (of ``load``), ``"mul"``
    (by ``value``) or a unary kind from ``UNARY_KINDS``."""

    kind: str
    load: Load | None = None
    value: float = 0.0


@dataclass(frozen=True)
class GemmProblem:
    """The compile-time class of a GEMM: what a rendered kernel is specialised on.

    It holds no size: requests that differ only in M, N, K, the batch or leading
    dimensions share one class, and so one build. Sizes decide a class only through
    alignment (``analyse`` refuses contiguous extents that are not 16-byte multiples, the
    one alignment class these TMA kernels have) and broadcasting (an operand of extent 1
    along M or N is read as a vector).
    """

    op: str
    ab_dtype: str
    a_major: str  # "K" (row-major A) or "M"
    b_major: str  # "N" (row-major B) or "K"
    d_major: str  # "N" (row-major D) or "M"
    out_dtype: str
    nodes: tuple[Node, ...]

    @property
    def source(self) -> Load | None:
        """The matrix operand read as CUTLASS's C, if any."""
        for node in self.nodes:
            if node.load is not None and node.load.role == "matrix":
                return node.load
        return None

    @property
    def vectors(self) -> tuple[Load, ...]:
        """Row/column broadcast operands, in the order their pointers are passed."""
        return tuple(
            n.load for n in self.nodes if n.load is not None and n.load.role in ("row", "col")
        )

    def tag(self) -> str:
        """A short readable name part (``bf16_tn_n``...)."""
        short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
        return (
            f"{self.op}_{short[self.ab_dtype]}_a{self.a_major}{self.b_major}"
            f"{self.d_major}_{short[self.out_dtype]}"
        )


@dataclass(frozen=True)
class Dims:
    """Problem sizes in CUTLASS's (M, N, K, L) view; ``batch`` is L (1 unless ``bmm``)."""

    m: int
    n: int
    k: int
    batch: int


def broadcast_strides(
    spec_shape: Sequence[int], spec_stride: Sequence[int], lmn: tuple[int, int, int]
):
    """Broadcast a tensor of ``spec_shape`` to ``(L, M, N)``; returns its (m, n, l) strides.

    Broadcast (and size-1) dimensions get stride 0. Raises ``Unsupported`` when
    the shapes do not broadcast.
    """
    if len(spec_shape) > 3:
        raise Unsupported(f"an epilogue operand of rank {len(spec_shape)} (> 3)")
    shape = (1,) * (3 - len(spec_shape)) + tuple(spec_shape)
    stride = (0,) * (3 - len(spec_stride)) + tuple(spec_stride)
    out: list[int] = []
    for have, st, want in zip(shape, stride, lmn):
        if have == want and want != 1:
            out.append(st)
        elif have == 1:
            out.append(0)
        else:
            raise Unsupported(f"operand shape {tuple(spec_shape)} does not broadcast to {lmn}")
    l_st, m_st, n_st = out
    return m_st, n_st, l_st


def _aligned(dtype: str, *strides: int) -> bool:
    size = ITEMSIZE[dtype]
    return all((s * size) % TMA_ALIGN_BYTES == 0 for s in strides)


def classify_operand(spec: TensorSpec, lmn: tuple[int, int, int], index: int) -> Load:
    """Decide how the visitor tree reads an epilogue operand; ``Unsupported`` if it cannot."""
    if spec.dtype not in OPERAND_DTYPES:
        raise Unsupported(f"epilogue operand {index} has dtype {spec.dtype}")
    m_st, n_st, l_st = broadcast_strides(spec.shape, spec.stride, lmn)
    _, m, n = lmn
    if m_st == 0 and (n_st == 1 or n == 1):
        return Load("row", index, spec.dtype)
    if n_st == 0 and (m_st == 1 or m == 1):
        return Load("col", index, spec.dtype)
    vec = TMA_ALIGN_BYTES // ITEMSIZE[spec.dtype]
    if n_st == 1 and n % vec == 0 and _aligned(spec.dtype, m_st, l_st):
        return Load("matrix", index, spec.dtype, "N")
    if m_st == 1 and m % vec == 0 and _aligned(spec.dtype, n_st, l_st):
        return Load("matrix", index, spec.dtype, "M")
    raise Unsupported(
        f"epilogue operand {index} (shape {spec.shape}, stride {spec.stride}) is neither a "
        f"broadcast vector nor a matrix with a unit stride and {TMA_ALIGN_BYTES}-byte aligned "
        "leading dimensions (TMA needs that)"
    )


def _major(name: str, dtype: str, rows: int, cols: int, strides, batch: int) -> str:
    """``"row"`` when the last mode is contiguous, ``"col"`` when the first is; else raise."""
    r_st, c_st, l_st = strides
    vec = TMA_ALIGN_BYTES // ITEMSIZE[dtype]
    batch_strides = (l_st,) if batch > 1 else ()
    if batch > 1 and l_st == 0:
        raise Unsupported(f"{name} is broadcast over the batch (stride 0); TMA needs a stride")
    if c_st == 1 and cols % vec == 0 and _aligned(dtype, r_st, *batch_strides):
        return "row"
    if r_st == 1 and rows % vec == 0 and _aligned(dtype, c_st, *batch_strides):
        return "col"
    if c_st == 1 or r_st == 1:
        raise Unsupported(
            f"{name} [{rows}x{cols}] strides {strides[:2]}: TMA needs the contiguous extent "
            f"and the leading dimension to be multiples of {vec} {dtype} elements (16 bytes)"
        )
    raise Unsupported(f"{name} has no unit stride (strides {strides[:2]})")


def analyse(
    op: str, inputs: Sequence[TensorSpec], layout: TensorSpec, epilogue: Epilogue
) -> tuple[GemmProblem, Dims]:
    """The problem class and sizes of a request; raises ``Unsupported`` with the reason.

    ``plugin.GemmShape`` validates the request; this adds what CUTLASS needs (bf16/fp16
    inputs, TMA-aligned majors, an epilogue its visitor tree expresses).
    """
    shape = GemmShape.of(op, inputs, layout, epilogue)
    dims = Dims(shape.m, shape.n, shape.k, shape.batch)
    if min(dims.m, dims.n, dims.k, dims.batch) == 0:
        raise Unsupported("a zero-size GEMM (nothing for a kernel to do)")
    dt = shape.a.dtype
    if shape.b.dtype != dt or dt not in AB_DTYPES:
        raise Unsupported(f"input dtypes {dt}/{shape.b.dtype} (serves bf16 or fp16)")
    out_dtype = layout.dtype  # GemmShape checked that the epilogue stores this dtype
    if out_dtype not in OUT_DTYPES:
        raise Unsupported(f"output dtype {layout.dtype} (epilogue asks {epilogue.out_dtype})")
    a_st, b_st, d_st = (gemm_matrix_strides(s) for s in (shape.a, shape.b, layout))
    a_major = {"row": "K", "col": "M"}[_major("A", dt, dims.m, dims.k, a_st, dims.batch)]
    b_major = {"row": "N", "col": "K"}[_major("B", dt, dims.k, dims.n, b_st, dims.batch)]
    d_major = {"row": "N", "col": "M"}[_major("D", out_dtype, dims.m, dims.n, d_st, dims.batch)]

    lmn = (dims.batch, dims.m, dims.n)
    nodes: list[Node] = []
    extra: list[TensorSpec] = []
    if shape.bias is not None:
        extra.append(shape.bias)
        nodes.append(Node("add", classify_operand(shape.bias, lmn, 0)))
    offset = len(extra)
    for step in epilogue.steps:
        if step.kind in ADD_KINDS:
            if step.operand is None or not 0 <= step.operand < len(shape.operands):
                raise Unsupported(f"epilogue step {step.kind} names no valid operand")
            index = offset + step.operand
            load = classify_operand(shape.operands[step.operand], lmn, index)
            nodes.append(Node("add", load))
        elif step.kind == "mul_scalar":
            value = float(1.0 if step.value is None else step.value)
            if not math.isfinite(value):
                raise Unsupported(f"mul_scalar by {value} (the template bakes finite constants)")
            nodes.append(Node("mul", value=value))
        elif step.kind in UNARY_KINDS:
            nodes.append(Node(step.kind))
        else:
            raise Unsupported(f"epilogue step {step.kind!r} has no visitor node")
    matrices = [n.load for n in nodes if n.load is not None and n.load.role == "matrix"]
    if len(matrices) > 1:
        raise Unsupported(
            f"{len(matrices)} full-matrix epilogue operands; the template reads one (as C)"
        )
    vectors = [n for n in nodes if n.load is not None and n.load.role != "matrix"]
    if len(vectors) > MAX_VECTORS:
        raise Unsupported(f"{len(vectors)} broadcast operands (the launcher passes {MAX_VECTORS})")
    problem = GemmProblem(op, dt, a_major, b_major, d_major, out_dtype, tuple(nodes))
    return problem, dims
