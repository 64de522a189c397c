"""Render a ``GemmProblem`` x ``GemmConfig`` into CUTLASS 3 C++ source (jinja2).

The epilogue becomes an epilogue visitor tree (``Sm90EVT``): the accumulator
(``Sm90AccFetch``) feeds one ``Sm90Compute`` node per step; operands are read by
``Sm90RowBroadcast`` / ``Sm90ColBroadcast`` (vectors) or ``Sm90SrcFetch`` (the one
full matrix, passed as CUTLASS's C). The root node converts to the output dtype.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .configs import COOPERATIVE, GemmConfig
from .problem import GemmProblem, Load, Node

TEMPLATE = "gemm_sm90.cu.j2"
CPP_TYPE = {"bfloat16": "cutlass::bfloat16_t", "float16": "cutlass::half_t", "float32": "float"}
ROW = "cutlass::layout::RowMajor"
COL = "cutlass::layout::ColumnMajor"

# float32 expressions of ``x``: the formulas of ``Epilogue.apply_reference``.
UNARY_EXPR = {
    "relu": "(x < 0.f ? 0.f : x)",
    "gelu_erf": "(x * 0.5f * (1.f + erff(x * 0.70710678118654752f)))",
    "gelu_tanh": ("(x * 0.5f * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x))))"),
    "silu": "(x / (1.f + expf(-x)))",
    "sigmoid": "(1.f / (1.f + expf(-x)))",
    "tanh": "tanhf(x)",
}
UNARY_NAME = {
    "relu": "Relu",
    "gelu_erf": "GeluErf",
    "gelu_tanh": "GeluTanh",
    "silu": "Silu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


@dataclass(frozen=True)
class Functor:
    name: str
    expr: str


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def kernel_name(problem: GemmProblem, config: GemmConfig) -> str:
    """A stable, readable name; the epilogue enters through the source hash, not the name."""
    return f"cutlass3x_sm90_{problem.tag()}_{config.tag()}"


def _load_type(load: Load, vector_slot: int) -> tuple[str, str]:
    """C++ type and argument initializer of an operand load node."""
    elem = CPP_TYPE[load.dtype]
    ptr = f"static_cast<{elem} const*>(ptrs[{4 + vector_slot}])"
    l_stride = f"ints[{12 + vector_slot}]"
    if load.role == "row":
        stride = "cute::Stride<cute::_0, cute::_1, int64_t>"
        node = f"fusion::Sm90RowBroadcast<0, TileShape, {elem}, ElementCompute, {stride}, 1>"
        return node, f"{{{ptr}, {elem}(0), {{cute::_0{{}}, cute::_1{{}}, {l_stride}}}}}"
    if load.role == "col":
        stride = "cute::Stride<cute::_1, cute::_0, int64_t>"
        node = f"fusion::Sm90ColBroadcast<0, TileShape, {elem}, ElementCompute, {stride}, 1>"
        return node, f"{{{ptr}, {elem}(0), {{cute::_1{{}}, cute::_0{{}}, {l_stride}}}}}"
    return "fusion::Sm90SrcFetch<ElementC>", "{}"


def _evt(nodes: tuple[Node, ...]) -> tuple[list[Functor], list[str], str]:
    """Functors to define, the ``Evt1..n`` type texts and the root's argument initializer."""
    functors: dict[str, Functor] = {}
    types: list[str] = []
    args = "{}"  # Sm90AccFetch
    vector_slot = 0
    for i, node in enumerate(nodes, start=1):
        prev = f"Evt{i - 1}"
        if node.kind == "add":
            assert node.load is not None
            load_type, load_args = _load_type(node.load, vector_slot)
            if node.load.role != "matrix":
                vector_slot += 1
            compute = "fusion::Sm90Compute<Add, ElementCompute, ElementCompute, kRound>"
            types.append(f"fusion::Sm90EVT<{compute}, {prev}, {load_type}>")
            args = f"{{{args}, {load_args}, {{}}}}"
            continue
        if node.kind == "mul":
            name = f"Scale{i}"
            # A C++17 hexadecimal literal holds the double exactly; then rounded to float
            # the same way torch rounds the Python float against a float32 tensor.
            functors[name] = Functor(name, f"(x * float({node.value.hex()}))")
        else:
            name = UNARY_NAME[node.kind]
            functors[name] = Functor(name, UNARY_EXPR[node.kind])
        compute = f"fusion::Sm90Compute<{name}, ElementCompute, ElementCompute, kRound>"
        types.append(f"fusion::Sm90EVT<{compute}, {prev}>")
        args = f"{{{args}, {{}}}}"
    return list(functors.values()), types, f"{{{args}, {{}}}}"


def _strides(problem: GemmProblem) -> dict[str, str]:
    def make(unit_second: bool, lead: int) -> str:
        one = "cute::Int<1>{}"
        ld, batch = f"ints[{lead}]", f"ints[{lead + 1}]"
        if unit_second:
            return f"cute::make_stride({ld}, {one}, {batch})"
        return f"cute::make_stride({one}, {ld}, {batch})"

    source = problem.source
    c_major = source.major if source is not None else problem.d_major
    # CUTLASS views A as (M, K), B as (N, K), C/D as (M, N).
    return {
        "layout_a": ROW if problem.a_major == "K" else COL,
        "stride_a": make(problem.a_major == "K", 4),
        "layout_b": COL if problem.b_major == "K" else ROW,
        "stride_b": make(problem.b_major == "K", 6),
        "layout_c": ROW if c_major == "N" else COL,
        "stride_c": make(c_major == "N", 8),
        "layout_d": ROW if problem.d_major == "N" else COL,
        "stride_d": make(problem.d_major == "N", 10),
    }


def describe_epilogue(problem: GemmProblem) -> str:
    parts = []
    for node in problem.nodes:
        if node.kind == "add" and node.load is not None:
            parts.append(f"add {node.load.role}[{node.load.index}]:{node.load.dtype}")
        elif node.kind == "mul":
            parts.append(f"mul {node.value!r}")
        else:
            parts.append(node.kind)
    parts.append(f"store {problem.out_dtype}")
    return ", ".join(parts)


def render(problem: GemmProblem, config: GemmConfig, cutlass_version: str) -> str:
    """The complete ``.cu`` source of one kernel and its extern "C" entry points."""
    functors, evt_nodes, evt_args = _evt(problem.nodes)
    source = problem.source
    if config.schedule == COOPERATIVE:
        kernel_schedule = "cutlass::gemm::KernelTmaWarpSpecializedCooperative"
        epilogue_schedule = "cutlass::epilogue::TmaWarpSpecializedCooperative"
    else:
        kernel_schedule = "cutlass::gemm::KernelTmaWarpSpecializedPingpong"
        epilogue_schedule = "cutlass::epilogue::TmaWarpSpecialized"
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            kernel_name=kernel_name(problem, config),
            cutlass_version=cutlass_version,
            schedule=config.schedule,
            tile_text="x".join(map(str, config.tile)),
            cluster_text="x".join(map(str, config.cluster)),
            epilogue_text=describe_epilogue(problem),
            functors=functors,
            element_a=CPP_TYPE[problem.ab_dtype],
            element_b=CPP_TYPE[problem.ab_dtype],
            element_c=CPP_TYPE[source.dtype] if source is not None else "",
            element_d=CPP_TYPE[problem.out_dtype],
            kernel_schedule=kernel_schedule,
            epilogue_schedule=epilogue_schedule,
            evt_nodes=evt_nodes,
            evt_args=evt_args,
            tile=config.tile,
            cluster=config.cluster,
            swizzle=config.swizzle,
            **_strides(problem),
        )
    )
