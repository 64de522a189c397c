"""What one ROCm GEMM kernel computes (``GemmProblem``) and how it is tiled (``GemmConfig``).

Both are frozen, picklable dataclasses with a ``key()`` that enters the kernel's name and
cache key. ``problem_from_specs`` turns the autotuner's ``TensorSpec`` description into a
``GemmProblem``, or says why this backend cannot build it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tilefuse import plugin
from tilefuse.errors import Unsupported

OPS = tuple(plugin.GEMM_OPS)
# Architectures with the MFMA instructions the MFMA variant uses (bf16_1k needs gfx90a+).
MFMA_ARCHS = ("gfx90a", "gfx940", "gfx941", "gfx942")
WAVE_SIZE = 64


@dataclass(frozen=True)
class GemmProblem:
    """One GEMM-family op with its dtypes, operand layouts and fused epilogue.

    ``bias_dtype`` is set for ``addmm`` only. ``epilogue`` carries the operand dtypes the
    kernel reads; strides and sizes are run-time arguments, so one compiled kernel serves
    every shape and stride with these dtypes and layouts.
    """

    op: str
    a_dtype: str
    b_dtype: str
    out_dtype: str
    a_layout: str = "row"
    b_layout: str = "row"
    bias_dtype: str | None = None
    epilogue: plugin.Epilogue = plugin.Epilogue()

    def key(self) -> str:
        return (
            f"{self.op}_{self.a_dtype}{self.a_layout[0]}_{self.b_dtype}{self.b_layout[0]}"
            f"_{self.bias_dtype}_{self.out_dtype}|{self.epilogue.key()}"
        )


@dataclass(frozen=True)
class GemmConfig:
    """Tiling of one kernel.

    SIMT variant (``mfma=False``): a block computes ``block_m x block_n`` with
    ``(block_m // thread_m) * (block_n // thread_n)`` threads, each owning a
    ``thread_m x thread_n`` accumulator tile. MFMA variant: each wave (64 lanes) owns a
    ``wave_m x wave_n`` tile made of 32x32 MFMA blocks. ``block_k`` is the K step staged in
    LDS (two buffers: the next tile is fetched while the current one is used).
    """

    block_m: int
    block_n: int
    block_k: int
    thread_m: int = 4
    thread_n: int = 4
    wave_m: int = 32
    wave_n: int = 32
    mfma: bool = False

    @property
    def threads(self) -> int:
        if self.mfma:
            return (self.block_m // self.wave_m) * (self.block_n // self.wave_n) * WAVE_SIZE
        return (self.block_m // self.thread_m) * (self.block_n // self.thread_n)

    def name(self) -> str:
        if self.mfma:
            return f"mfma{self.block_m}x{self.block_n}x{self.block_k}_w{self.wave_m}x{self.wave_n}"
        return f"simt{self.block_m}x{self.block_n}x{self.block_k}_t{self.thread_m}x{self.thread_n}"

    def check(self, problem: GemmProblem | None = None) -> plugin.Verdict:
        """Whether this tiling is well formed (and usable for ``problem``); never raises."""
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        if min(bm, bn, bk) <= 0:
            return plugin.Verdict.no(f"{self.name()}: tile sizes must be positive")
        if self.mfma:
            if bm % self.wave_m or bn % self.wave_n or self.wave_m % 32 or self.wave_n % 32:
                return plugin.Verdict.no(
                    f"{self.name()}: wave tile must be a multiple of 32 and divide the block"
                )
            k_step = 2 if problem is not None and problem.a_dtype == "float32" else 8
            if bk % k_step:
                return plugin.Verdict.no(f"{self.name()}: block_k must be a multiple of {k_step}")
            if problem is not None and problem.a_dtype != problem.b_dtype:
                return plugin.Verdict.no("MFMA needs A and B of one dtype")
        elif bm % self.thread_m or bn % self.thread_n:
            return plugin.Verdict.no(f"{self.name()}: thread tile must divide the block")
        threads = self.threads
        if threads > 1024 or threads % WAVE_SIZE:
            return plugin.Verdict.no(
                f"{self.name()}: {threads} threads (need a multiple of 64, at most 1024)"
            )
        if (bm * bk) % threads or (bn * bk) % threads:
            return plugin.Verdict.no(
                f"{self.name()}: the A and B tiles must split evenly over {threads} threads"
            )
        if self.lds_bytes(problem) > 64 * 1024:
            return plugin.Verdict.no(f"{self.name()}: needs more than 64 KiB of LDS")
        return plugin.Verdict.yes()

    def lds_pad(self, problem: GemmProblem | None = None) -> int:
        """LDS row padding: one element against bank conflicts; four keep 16-bit MFMA rows
        8-byte aligned."""
        if self.mfma and (problem is None or problem.a_dtype != "float32"):
            return 4
        return 1

    def lds_bytes(self, problem: GemmProblem | None = None) -> int:
        """LDS used by the two A and B buffers, exactly as the template declares them (SIMT
        stages fp32 ``[k][m]``; MFMA stages raw inputs ``[m][k]``)."""
        bm, bn, bk, pad = self.block_m, self.block_n, self.block_k, self.lds_pad(problem)
        if self.mfma:
            elem = 4 if problem is not None and problem.a_dtype == "float32" else 2
            return 2 * (bm + bn) * (bk + pad) * elem
        return 2 * bk * (bm + pad + bn + pad) * 4


# Candidate tilings offered to the autotuner, small to large.
SIMT_CONFIGS = (
    GemmConfig(32, 32, 16, 2, 2),
    GemmConfig(64, 64, 16, 4, 4),
    GemmConfig(128, 64, 16, 8, 4),
    GemmConfig(128, 128, 8, 8, 8),
)
MFMA_CONFIGS = (
    GemmConfig(64, 64, 32, wave_m=32, wave_n=32, mfma=True),
    GemmConfig(128, 64, 32, wave_m=64, wave_n=32, mfma=True),
    GemmConfig(128, 128, 32, wave_m=64, wave_n=64, mfma=True),
)


def broadcast_strides(spec: plugin.TensorSpec, out_shape: Sequence[int]) -> tuple[int, int, int]:
    """(batch, row, col) element strides reading ``spec`` broadcast to ``out_shape``.

    ``out_shape`` is ``[M, N]`` or ``[B, M, N]``; dims that are missing or of size 1 get
    stride 0.
    """
    full = (1,) * (3 - len(out_shape)) + tuple(out_shape)
    shape = (1,) * (3 - len(spec.shape)) + tuple(spec.shape)
    stride = (0,) * (3 - len(spec.stride)) + tuple(spec.stride)
    del full  # the operand was checked to broadcast; only its own sizes matter
    b, r, c = (0 if size == 1 else st for size, st in zip(shape, stride, strict=True))
    return b, r, c


def problem_from_specs(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
) -> GemmProblem | plugin.Verdict:
    """The ``GemmProblem`` for the autotuner's description, or a ``Verdict.no`` saying why not.

    Input conventions follow ``tilefuse.plugin.Choice``: ``mm (a, b)``, ``addmm (bias, a, b)``,
    ``bmm (a, b)``, then the epilogue's operands; ``layout`` is the output's spec.
    ``plugin.GemmShape`` validates the request; this adds the epilogue steps HIP renders.
    """
    from .epilogue import check_epilogue

    try:
        shape = plugin.GemmShape.of(op, inputs, layout, epilogue)
    except Unsupported as error:
        return plugin.Verdict.no(str(error))
    verdict = check_epilogue(epilogue)
    if not verdict:
        return verdict
    # The kernel takes strides at run time; a strided operand is read in row order.
    return GemmProblem(
        op=op,
        a_dtype=shape.a.dtype,
        b_dtype=shape.b.dtype,
        out_dtype=layout.dtype,
        a_layout="col" if shape.a_major == "col" else "row",
        b_layout="col" if shape.b_major == "col" else "row",
        bias_dtype=shape.bias.dtype if shape.bias is not None else None,
        epilogue=epilogue,
    )
