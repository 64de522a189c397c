"""Rendering of ``tilefuse.plugin.Epilogue`` steps as Triton source inside the GEMM store.

The meaning of each step is ``Epilogue.apply_reference``; this module is a
table from step kind to the Triton statement computing it on the float32 tile
``x``. Only ops present in both Triton 3.6 and 3.9 are used (``tl.erf``,
``tl.sigmoid``, ``tl.where``); tanh is written as ``2 * sigmoid(2x) - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tilefuse import plugin

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi)

# Steps that need no operand: kind -> statements over ``x`` (float32 tile).
_UNARY: dict[str, tuple[str, ...]] = {
    # ``where(x < 0, 0, x)`` keeps NaN, as torch.relu does (max(NaN, 0) may give 0).
    "relu": ("x = tl.where(x < 0.0, 0.0, x)",),
    "gelu_erf": (f"x = x * 0.5 * (1.0 + tl.erf(x * {_SQRT_HALF!r}))",),
    "gelu_tanh": (
        f"inner = {_SQRT_2_OVER_PI!r} * (x + 0.044715 * x * x * x)",
        "x = x * 0.5 * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))",
    ),
    "silu": ("x = x * tl.sigmoid(x)",),
    "sigmoid": ("x = tl.sigmoid(x)",),
    "tanh": ("x = 2.0 * tl.sigmoid(2.0 * x) - 1.0",),
}


def operand_load(index: int, pattern: str, batched: bool) -> str:
    """A statement loading extra tensor ``index`` as a float32 value broadcastable to the tile.

    ``pattern`` is ``"n"``, ``"m"`` or ``"mn"`` (see ``GemmProblem``); loads are
    masked to the output's bounds; the batch offset is an int64 scalar.
    """
    base = f"e{index}_ptr" + (f" + batch * e{index}_sb" if batched else "")
    if pattern == "n":
        load = f"tl.load({base} + rn * e{index}_sn, mask=rn < N, other=0.0)"
        return f"e{index} = {load}.to(tl.float32)[None, :]"
    if pattern == "m":
        load = f"tl.load({base} + rm * e{index}_sm, mask=rm < M, other=0.0)"
        return f"e{index} = {load}.to(tl.float32)[:, None]"
    offsets = f"rm[:, None] * e{index}_sm + rn[None, :] * e{index}_sn"
    return f"e{index} = tl.load({base} + {offsets}, mask=out_mask, other=0.0).to(tl.float32)"


def render_steps(
    steps: Sequence[plugin.EpilogueStep], patterns: Sequence[str], batched: bool
) -> list[str]:
    """Statements applying ``steps`` to ``x``; each extra tensor is loaded once, at first use.

    ``steps`` must already be validated (``GemmProblem``): operand indexes
    refer to extra tensors, scalars are finite.
    """
    lines: list[str] = []
    loaded: set[int] = set()
    for step in steps:
        if step.operand is not None and step.kind in ("add_bias_n", "add_bias_m", "add_matrix"):
            index = step.operand
            if index not in loaded:
                lines.append(operand_load(index, patterns[index], batched))
                loaded.add(index)
            lines.append(f"x = x + e{index}")
        elif step.kind == "mul_scalar":
            value = float(step.value if step.value is not None else 1.0)
            lines.append(f"x = x * {value!r}")
        else:
            lines.extend(_UNARY[step.kind])
    return lines
