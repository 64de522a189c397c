"""The model benchmark's row summary and table: ``python bench/model_report.py FILE.json``.

``summarize`` adds the flat columns every row of ``bench/models.py``'s JSON carries
(``eager_ms``, ``inductor_ms``, ``tilefuse_ms``, the compile seconds, speedups over eager,
kernels per iteration, ``error``; and ``inductor_cg_ms``, ``tilefuse_cg_ms``... for a run
with ``--cudagraphs``); ``format_table`` is what ``bench/models.py`` prints, so a saved file
reads the same as the live run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

COMPILED = ("inductor", "tilefuse")
BACKENDS = ("eager", *COMPILED)
CUDA_GRAPHS = ("inductor_cg", "tilefuse_cg")  # the columns of a run with --cudagraphs


def _compiled_in(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The compiled columns of ``rows``: always ``COMPILED``, then any of ``CUDA_GRAPHS``
    that some row has a result for."""
    extra = [c for c in CUDA_GRAPHS if any(c in (r.get("results") or {}) for r in rows)]
    return (*COMPILED, *extra)


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its flat columns filled in from ``row["results"]`` (returned, and also
    changed in place). ``error`` joins the row's own error and each backend's."""
    results = row.get("results") or {}
    compiled = _compiled_in([row])
    for name in ("eager", *compiled):
        row[f"{name}_ms"] = (results.get(name) or {}).get("ms")
    for name in compiled:
        row[f"{name}_compile_s"] = (results.get(name) or {}).get("compile_s")
    # tilefuse's C++ wrappers built in the background after its first call (not in compile_s)
    row["tilefuse_background_s"] = (results.get("tilefuse") or {}).get("background_s")
    eager = row["eager_ms"]
    row["speedups"] = {
        name: (eager / row[f"{name}_ms"]) if eager and row[f"{name}_ms"] else None
        for name in compiled
    }
    row["kernels"] = {name: r.get("kernels") for name, r in results.items()}
    if "tilefuse" in results and results["tilefuse"].get("tilefuse"):
        row["tilefuse_stats"] = results["tilefuse"]["tilefuse"]
    problems = [row["error"]] if row.get("error") else []
    for name, r in results.items():
        if r.get("error"):
            problems.append(f"{name}: {r['error']}")
    row["error"] = "; ".join(problems) or None
    return row


def geomean_speedups(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per compiled backend: the geometric mean of its speedups over eager, over the rows
    where it has one, and how many rows that is."""
    out = {}
    for name in _compiled_in(rows):
        values = [r["speedups"][name] for r in rows if (r.get("speedups") or {}).get(name)]
        mean = math.exp(sum(math.log(v) for v in values) / len(values)) if values else None
        out[name] = {"geomean": mean, "rows": len(values)}
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cell_ms(row: dict[str, Any], name: str, notes: list[str]) -> str:
    r = (row.get("results") or {}).get(name)
    if r is None:
        return "-"
    if r.get("skipped"):
        return "skip"
    if r.get("error"):
        notes.append(
            f"[{len(notes) + 1}] {row['model']} {row['mode']} / {name}: "
            f"{r['error'].strip().splitlines()[0] if r['error'].strip() else 'error'}"
        )
        return f"ERR[{len(notes)}]"
    text = _num(r.get("ms"), ".3f")
    speedup = (row.get("speedups") or {}).get(name)
    if speedup:
        text += f" {speedup:.2f}x"
    stats = r.get("tilefuse") or {}
    if stats.get("graphs_fallen_back") or stats.get("cuda_graph_fallbacks"):
        text += "*"
    return text


def format_table(data: dict[str, Any]) -> str:
    """The human-readable table for a run's JSON (as written by bench/models.py)."""
    m = data["machine"]
    lines = [
        f"tilefuse model bench | {m['device']} | torch {m['torch']} | triton {m['triton']} | "
        f"tilefuse {m['tilefuse']} | {data['created']} | timing: {data['mode']['timing']}",
    ]
    for name, info in data["backends"].items():
        if not info["usable"]:
            lines.append(f"skipped backend {name}: {info['reason']}")
    graphs_columns = _compiled_in(data["rows"])[len(COMPILED) :]  # --cudagraphs columns
    header = ("model", "mode", "eager ms", "inductor ms", "tilefuse ms",
              *(f"{c} ms" for c in graphs_columns), "compile s i/t",
              "kernels e/i/t", "tf graphs")  # fmt: skip
    widths = (19, 11, 9, 17, 17, *(17 for _ in graphs_columns), 13, 14, 9)

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines += ["", fmt(header), fmt(tuple("-" * w for w in widths))]
    notes: list[str] = []
    for row in data["rows"]:
        results = row.get("results") or {}
        if not results and row.get("error"):
            notes.append(f"[{len(notes) + 1}] {row['model']} {row['mode']}: "
                         f"{row['error'].splitlines()[0]}")  # fmt: skip
            lines.append(fmt((row["model"], row["mode"], f"ERR[{len(notes)}]")))
            continue
        kernels = row.get("kernels") or {}
        stats = row.get("tilefuse_stats") or {}
        graphs = (
            f"{stats.get('graphs_compiled', 0)}/{stats.get('graphs_fallen_back', 0)}fb"
            f"/{stats.get('cpp_wrappers', 0)}c++"
            if stats
            else "-"
        )
        background = row.get("tilefuse_background_s")
        background = f"+{background:.1f}" if background and background >= 0.05 else ""
        lines.append(
            fmt(
                (
                    row["model"],
                    row["mode"],
                    _cell_ms(row, "eager", notes),
                    _cell_ms(row, "inductor", notes),
                    _cell_ms(row, "tilefuse", notes),
                    *(_cell_ms(row, c, notes) for c in graphs_columns),
                    f"{_num(row.get('inductor_compile_s'), '.1f')}/"
                    f"{_num(row.get('tilefuse_compile_s'), '.1f')}{background}",
                    "/".join(_num(kernels.get(b), "d") for b in BACKENDS),
                    graphs,
                )
            )
        )
    geo = data.get("geomean_speedup") or geomean_speedups(data["rows"])
    lines.append("")
    for name in _compiled_in(data["rows"]):
        g = geo.get(name) or {}
        value = f"{g['geomean']:.3f}x" if g.get("geomean") else "-"
        lines.append(f"geomean speedup over eager, {name}: {value} ({g.get('rows', 0)} rows)")
    lines.append(
        "(* tilefuse fell back to eager on some graph; tf graphs: compiled/fallen back/"
        "run by a C++ wrapper; compile +N: C++ wrappers built in the background)"
    )
    if graphs_columns:
        lines.append("(*_cg: mode='reduce-overhead', CUDA graphs; * there: a graph ran without)")
    if notes:
        lines += ["", "errors:", *("  " + n for n in notes)]
    return "\n".join(lines)


def format_profiles(data: dict[str, Any], width: int = 44) -> str:
    """Each row's top kernels per backend, side by side (rows measured with --profile)."""
    blocks = []
    for row in data["rows"]:
        profiles = {
            name: r["profile"] for name, r in (row.get("results") or {}).items() if r.get("profile")
        }
        if not profiles:
            continue
        names = list(profiles)
        lines = [f"top kernels per iteration: {row['model']} / {row['mode']} (ms, calls)"]
        lines.append("  ".join(n.ljust(width) for n in names).rstrip())
        depth = max(len(p) for p in profiles.values())
        for i in range(depth):
            cells = []
            for n in names:
                entries = profiles[n]
                if i >= len(entries):
                    cells.append("".ljust(width))
                    continue
                e = entries[i]
                tail = f" {e['ms']:8.3f} x{e['calls']:g}"
                cells.append(e["name"][: width - len(tail)].ljust(width - len(tail)) + tail)
            lines.append("  ".join(cells).rstrip())
        lines.extend(_family_lines(row, names, width))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or "no profiles in this run"


def _family_lines(row: dict[str, Any], names: list[str], width: int) -> list[str]:
    """Every kernel's time per iteration by family, per backend side by side (rows
    measured with a version of --profile that records ``profile_families``)."""
    results = row.get("results") or {}
    families = {n: results[n].get("profile_families") or {} for n in names}
    kinds = sorted({k for f in families.values() for k in f if k != "all"})
    if not kinds:
        return []
    lines = ["", "all kernels by family (ms, calls)"]
    for kind in [*kinds, "all"]:
        cells = []
        for n in names:
            total = families[n].get(kind)
            tail = f" {total['ms']:8.3f} x{total['calls']:g}" if total else ""
            cells.append(kind[: width - len(tail)].ljust(width - len(tail)) + tail)
        lines.append("  ".join(cells).rstrip())
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the table of a saved model run.")
    parser.add_argument("file", type=Path, help="a JSON file written by bench/models.py")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    print(format_table(data))
    if any(r.get("profile") for row in data["rows"] for r in (row.get("results") or {}).values()):
        print()
        print(format_profiles(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
