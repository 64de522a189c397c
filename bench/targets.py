"""The suite's targets and the PASS/MISS verdict for a workload's tilefuse row.

The numbers are the project's goals; do not change them to make a run pass.
- memory-bound: >= 90% of floor (column sum >= 92%, transpose-add >= 85%) and not slower than
  Inductor's default mode;
- GEMM with an epilogue: after autotuning (the ``tilefuse_max`` row), >= 97% of floor and not
  slower than Inductor's ``max-autotune-no-cudagraphs`` mode;
- everywhere: tilefuse's default-mode cold compile within 2x Inductor's default mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS = "PASS"
MISS = "MISS"
NONE = "-"  # no target, or nothing to judge with (the reason says which)


COMPILE_RATIO = 2.0  # tilefuse's default-mode compile may take at most this times Inductor's


@dataclass(frozen=True)
class Target:
    """Row ``row`` must reach ``min_pct`` of floor and be no slower than backend ``baseline``;
    the ``tilefuse`` row's cold compile must be within ``COMPILE_RATIO`` x ``inductor``'s."""

    min_pct: float
    baseline: str
    row: str = "tilefuse"

    def describe(self) -> str:
        judged = "" if self.row == "tilefuse" else f"{self.row}: "
        return f"{judged}>={self.min_pct:g}% & <={self.baseline}"

    def to_json(self) -> dict[str, Any]:
        return {"min_pct": self.min_pct, "baseline": self.baseline, "row": self.row}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Target | None:
        return cls(**data) if data else None


MEMORY = Target(90.0, "inductor")
COLUMN_SUM = Target(92.0, "inductor")
TRANSPOSE_ADD = Target(85.0, "inductor")
GEMM_EPILOGUE = Target(97.0, "inductor_max", row="tilefuse_max")


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def verdict(target: Target | None, results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(PASS | MISS | "-", reason) for the judged tilefuse row against ``target``.

    ``results`` maps backend name to its result dict (keys ``ms``, ``pct_of_floor``,
    ``compile_s``, ``error``, optional ``skipped``). MISS when the judged row failed (error or
    mismatch), is below the floor share, is slower than the baseline, or when the ``tilefuse``
    row compiled more than ``COMPILE_RATIO`` x slower than ``inductor``; "-" when there is no
    target, the row was not run or was skipped as unusable here, or the baseline has no time.
    """
    if target is None:
        return NONE, "no target for this workload"
    row = target.row
    mine = results.get(row)
    if mine is None:
        return NONE, f"{row} not run"
    if mine.get("skipped"):
        return NONE, f"{row} skipped: {_first_line(mine['skipped'])}"
    if mine.get("ms") is None:
        return MISS, f"{row} has no time: {_first_line(mine.get('error') or 'no time')}"
    pct = mine["pct_of_floor"]
    base = results.get(target.baseline)
    misses: list[str] = []  # every part that is missed, not only the first
    if pct < target.min_pct:
        misses.append(f"{pct:.1f}% of floor < {target.min_pct:g}%")
    if base is None or base.get("ms") is None:
        if misses:
            return MISS, misses[0]
        return NONE, f"{pct:.1f}% of floor meets the target, but {target.baseline} has no time"
    if mine["ms"] > base["ms"]:
        misses.append(f"slower than {target.baseline}: {mine['ms']:.4g} > {base['ms']:.4g} ms")
    reason = f"{pct:.1f}% of floor, {mine['ms']:.4g} <= {base['ms']:.4g} ms ({target.baseline})"
    ours, theirs = _compile_s(results, "tilefuse"), _compile_s(results, "inductor")
    if ours is not None and theirs is not None:
        if ours > COMPILE_RATIO * theirs:
            misses.append(f"compile {ours:.2f} s > {COMPILE_RATIO:g}x {theirs:.2f} s")
        reason += f"; compile {ours:.2f} s vs {theirs:.2f} s"
    if misses:
        return MISS, "; ".join(misses)
    return PASS, reason


def _compile_s(results: dict[str, dict[str, Any]], name: str) -> float | None:
    row = results.get(name) or {}
    return row.get("compile_s")
