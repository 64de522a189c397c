"""Render the HIP C++ source of one GEMM kernel from ``templates/gemm.hip.j2``.

``render_gemm(problem, config)`` is pure (no toolkit, no device): the same inputs always give
the same text, which is what the compile cache hashes.
"""

from __future__ import annotations

import functools
import hashlib

import jinja2

from .epilogue import render_epilogue
from .gemm_spec import GemmConfig, GemmProblem
from .hip_types import dtype_info

_MFMA_BUILTINS = {
    "bfloat16": ("bf16", "__builtin_amdgcn_mfma_f32_32x32x8bf16_1k", 8),
    "float16": ("f16", "__builtin_amdgcn_mfma_f32_32x32x8f16", 8),
    "float32": ("f32", "__builtin_amdgcn_mfma_f32_32x32x2f32", 2),
}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tilefuse_rocm", "templates"),
        undefined=jinja2.StrictUndefined,  # a missing parameter is an error, not empty text
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def kernel_name(problem: GemmProblem, config: GemmConfig) -> str:
    """A C identifier unique to (problem, config): readable prefix plus a short hash."""
    digest = hashlib.sha256(f"{problem.key()}|{config!r}".encode()).hexdigest()[:10]
    return f"tf_{problem.op}_{config.name()}_{digest}"


def render_gemm(problem: GemmProblem, config: GemmConfig) -> str:
    """The complete ``.hip`` source for ``problem`` tiled by ``config``.

    Raises ``ValueError`` when ``config`` does not fit ``problem`` or the epilogue has a step
    the template cannot render (``GemmConfig.check`` and ``check_epilogue`` say so first).
    """
    verdict = config.check(problem)
    if not verdict:
        raise ValueError(verdict.reason)
    num_ops = len(problem.epilogue.operands)
    params = {
        "kernel_name": kernel_name(problem, config),
        "op": problem.op,
        "a": dtype_info(problem.a_dtype),
        "b": dtype_info(problem.b_dtype),
        "out": dtype_info(problem.out_dtype),
        "bias": dtype_info(problem.bias_dtype or "float32"),
        "has_bias": problem.bias_dtype is not None,
        "a_layout": problem.a_layout,
        "b_layout": problem.b_layout,
        "block_m": config.block_m,
        "block_n": config.block_n,
        "block_k": config.block_k,
        "thread_m": config.thread_m,
        "thread_n": config.thread_n,
        "wave_m": config.wave_m,
        "wave_n": config.wave_n,
        "threads": config.threads,
        "mfma": config.mfma,
        "variant": "mfma" if config.mfma else "simt",
        "lds_pad": config.lds_pad(problem),
        "num_ops": num_ops,
        "ops_array": max(num_ops, 1),
        "epilogue_lines": render_epilogue(problem.epilogue),
        "mfma_kind": "",
        "mfma_builtin": "",
        "k_per_mfma": 0,
    }
    if config.mfma:
        kind, builtin, k_step = _MFMA_BUILTINS[problem.a_dtype]
        params.update(mfma_kind=kind, mfma_builtin=builtin, k_per_mfma=k_step)
    return _environment().get_template("gemm.hip.j2").render(**params)
