"""Recognise a pointwise node that can run as a GEMM template's epilogue.

The node's body is traced into an expression tree; the tree must be a chain of
steps from ``tilefuse.plugin.EPILOGUE_KINDS`` applied to the template's result
read at the output element, with other tensors read as a bias vector or a
matrix of the output's shape. Anything else is refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sympy

from ..ir.index import stride_of
from ..ir.nodes import Pointwise
from ..ir.ops import OP_NAMES, ops_handler
from ..plugin import EpilogueStep
from .nodes import SchedNode


class NotAnEpilogue(Exception):
    pass


@dataclass
class Operand:
    """An extra tensor the epilogue reads, as a strided view of ``buffer``."""

    buffer: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: str = "float32"  # torch dtype name, as in plugin.TensorSpec
    device: str = "cpu"


@dataclass
class MatchedEpilogue:
    node: SchedNode
    steps: tuple[EpilogueStep, ...]
    operands: list[Operand]


class _TreeBuilder:
    """An ops handler building nested tuples: ``(op, *args)``."""

    def load(self, name: str, index: Any) -> tuple:
        return ("load", name, index)

    def constant(self, value: Any, dtype: Any) -> tuple:
        return ("constant", float(value))

    def to_dtype(self, value: Any, dtype: Any) -> Any:
        return value  # math runs in float32; the final store casts

    def masked(self, *args: Any) -> tuple:
        raise NotAnEpilogue("masked loads")

    def indirect(self, *args: Any) -> tuple:
        raise NotAnEpilogue("gathered loads")

    def index_expr(self, *args: Any) -> tuple:
        raise NotAnEpilogue("index arithmetic")

    def __getattr__(self, name: str):
        if name not in OP_NAMES:
            raise AttributeError(name)
        return lambda *args: (name, *args)


def _const(t: Any, value: float) -> bool:
    return isinstance(t, tuple) and t[0] == "constant" and math.isclose(t[1], value, rel_tol=1e-6)


def _is_const(t: Any) -> bool:
    return isinstance(t, tuple) and t[0] == "constant"


class _Matcher:
    def __init__(
        self, template: str, out_index: Any, vars_: list[sympy.Symbol], shape: tuple[int, ...]
    ):
        self.template = template
        self.out_index = out_index
        self.vars = vars_
        self.shape = shape
        self.operands: list[Operand] = []

    def chain(self, t: Any) -> list[EpilogueStep]:
        """Steps turning the template result into ``t``."""
        op = t[0]
        if op == "load":
            if t[1] != self.template:
                raise NotAnEpilogue(f"reads {t[1]} where the GEMM result was expected")
            if sympy.simplify(t[2] - self.out_index) != 0:
                raise NotAnEpilogue("reads the GEMM result at another element")
            return []
        if op == "add":
            for acc, other in ((t[1], t[2]), (t[2], t[1])):
                if self._uses_template(acc) and not self._uses_template(other):
                    return self.chain(acc) + [self.operand_step(other)]
        if op == "mul":
            for acc, other in ((t[1], t[2]), (t[2], t[1])):
                if _is_const(other) and self._uses_template(acc):
                    return self.chain(acc) + [EpilogueStep("mul_scalar", value=other[1])]
            gelu = self._gelu(t)
            if gelu is not None:
                return gelu
            if t[2] == ("sigmoid", t[1]):
                return self.chain(t[1]) + [EpilogueStep("silu")]
        if op == "maximum" and _const(t[2], 0.0):
            return self.chain(t[1]) + [EpilogueStep("relu")]
        if op in ("sigmoid", "tanh"):
            return self.chain(t[1]) + [EpilogueStep(op)]
        raise NotAnEpilogue(f"{op} is not an epilogue step")

    def _gelu(self, t: Any) -> list[EpilogueStep] | None:
        # x * 0.5 * (1 + erf(x / sqrt 2)) and the tanh form, as the gelu lowering writes them
        left, right = t[1], t[2]
        if not (isinstance(left, tuple) and left[0] == "mul" and _const(left[2], 0.5)):
            return None
        v = left[1]
        if right[0] != "add" or not _const(right[2], 1.0):
            return None
        inner = right[1]
        if inner == ("erf", ("mul", v, inner[1][2])) and _const(inner[1][2], 1 / math.sqrt(2)):
            return self.chain(v) + [EpilogueStep("gelu_erf")]
        if inner[0] == "tanh":
            return self.chain(v) + [EpilogueStep("gelu_tanh")]
        return None

    def _uses_template(self, t: Any) -> bool:
        if not isinstance(t, tuple):
            return False
        if t[0] == "load":
            return t[1] == self.template
        return any(self._uses_template(a) for a in t[1:])

    def operand_step(self, t: Any) -> EpilogueStep:
        while t[0] == "mul" and (_const(t[2], 1.0) or _const(t[1], 1.0)):  # addmm's beta=1
            t = t[1] if _const(t[2], 1.0) else t[2]
        if t[0] != "load":
            raise NotAnEpilogue("the added term is not a plain tensor read")
        name, index = t[1], t[2]
        strides = []
        for var in self.vars:
            s = stride_of(index, var)
            if s is None or not s.is_Integer:
                raise NotAnEpilogue(f"{name} is read with a non-affine index")
            strides.append(int(s))
        offset = index.subs({v: 0 for v in self.vars})
        if not offset.is_Integer:
            raise NotAnEpilogue(f"{name} is read with a non-affine index")
        m_stride, n_stride = strides[-2], strides[-1]
        batch_zero = all(s == 0 for s in strides[:-2])
        k = len(self.operands)
        if m_stride == 0 and batch_zero:
            self.operands.append(Operand(name, (self.shape[-1],), (n_stride,), int(offset)))
            return EpilogueStep("add_bias_n", operand=k)
        if n_stride == 0 and batch_zero and len(self.shape) == 2:
            self.operands.append(Operand(name, (self.shape[-2], 1), (m_stride, 0), int(offset)))
            return EpilogueStep("add_bias_m", operand=k)
        self.operands.append(Operand(name, self.shape, tuple(strides), int(offset)))
        return EpilogueStep("add_matrix", operand=k)


def match_epilogue(
    template: SchedNode, node: SchedNode, buffers: dict[str, Any] | None = None
) -> MatchedEpilogue:
    """The epilogue ``node`` computes from ``template``'s result; raises ``NotAnEpilogue``.

    ``buffers`` maps names to ``Buffer`` objects, to record operand dtypes and devices.
    """
    data = node.buffer.data
    if not isinstance(data, Pointwise):
        raise NotAnEpilogue("not a pointwise node")
    shape = tuple(int(s) for s in template.buffer.layout.size)
    if tuple(int(s) for s in data.ranges) != shape:
        raise NotAnEpilogue("its shape differs from the GEMM result's")
    out_index = template.buffer.layout.index(node.index_vars)
    with ops_handler(_TreeBuilder()):
        tree = data.body(node.index_vars)
    matcher = _Matcher(template.name, out_index, node.index_vars, shape)
    steps = matcher.chain(tree)
    for op in matcher.operands:
        buf = (buffers or {}).get(op.buffer)
        if buf is not None:
            op.dtype = str(buf.dtype).removeprefix("torch.")
            op.device = str(buf.device)
    return MatchedEpilogue(node, tuple(steps), matcher.operands)
