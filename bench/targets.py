"""The suite's targets and the PASS/MISS verdict for a workload's tilefuse row.

The numbers are the project's goals; do not change them to make a run pass.
- memory-bound: >= 90% of floor (column sum >= 92%, transpose-add >= 85%) and not slower than
  Inductor's default mode;
- GEMM with an epilogue: >= 97% of floor and not slower than Inductor's
  ``max-autotune-no-cudagraphs`` mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS = "PASS"
MISS = "MISS"
NONE = "-"  # no target, or nothing to judge with (the reason says which)


@dataclass(frozen=True)
class Target:
    """tilefuse must reach ``min_pct`` of floor and be no slower than backend ``baseline``."""

    min_pct: float
    baseline: str

    def describe(self) -> str:
        return f">={self.min_pct:g}% & <={self.baseline}"

    def to_json(self) -> dict[str, Any]:
        return {"min_pct": self.min_pct, "baseline": self.baseline}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Target | None:
        return cls(**data) if data else None


MEMORY = Target(90.0, "inductor")
COLUMN_SUM = Target(92.0, "inductor")
TRANSPOSE_ADD = Target(85.0, "inductor")
GEMM_EPILOGUE = Target(97.0, "inductor_max")


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def verdict(target: Target | None, results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(PASS | MISS | "-", reason) for the tilefuse result against ``target``.

    ``results`` maps backend name to its result dict (keys ``ms``, ``pct_of_floor``, ``error``,
    optional ``skipped``). MISS when tilefuse failed (error or mismatch), is below the floor
    share, or is slower than the baseline; "-" when there is no target, tilefuse was not run or
    was skipped as unusable here, or the baseline has no time to compare with.
    """
    if target is None:
        return NONE, "no target for this workload"
    mine = results.get("tilefuse")
    if mine is None:
        return NONE, "tilefuse not run"
    if mine.get("skipped"):
        return NONE, f"tilefuse skipped: {_first_line(mine['skipped'])}"
    if mine.get("ms") is None:
        return MISS, f"tilefuse has no time: {_first_line(mine.get('error') or 'no time')}"
    pct = mine["pct_of_floor"]
    if pct < target.min_pct:
        return MISS, f"{pct:.1f}% of floor < {target.min_pct:g}%"
    base = results.get(target.baseline)
    if base is None or base.get("ms") is None:
        return NONE, f"{pct:.1f}% of floor meets the target, but {target.baseline} has no time"
    if mine["ms"] > base["ms"]:
        return MISS, f"slower than {target.baseline}: {mine['ms']:.4g} > {base['ms']:.4g} ms"
    return PASS, f"{pct:.1f}% of floor, {mine['ms']:.4g} <= {base['ms']:.4g} ms ({target.baseline})"
