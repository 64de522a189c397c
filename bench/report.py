"""Print the results table of a saved run: ``python bench/report.py FILE.json``.

``format_report`` is also what ``bench/run.py`` prints, so a saved file reads the same as the
live run. Verdicts are recomputed from the saved numbers and the saved targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.targets import Target, verdict  # noqa: E402

COLUMNS = ("workload", "backend", "ms", "%floor", "compile_s", "kernels", "target", "verdict")
WIDTHS = (24, 13, 10, 7, 10, 8, 37, 7)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(cells: tuple[str, ...]) -> str:
    parts = []
    for i, (cell, width) in enumerate(zip(cells, WIDTHS)):
        parts.append(cell.ljust(width) if i in (0, 1, 6, 7) else cell.rjust(width))
    return "  ".join(parts).rstrip()


def _header(data: dict[str, Any]) -> list[str]:
    m, f = data["machine"], data["floors"]
    lines = [
        f"tilefuse bench | {m['device']} | torch {m['torch']} | triton {m['triton']} | "
        f"tilefuse {m['tilefuse']} | {data['created']}",
        f"floors: copy {f['copy_gb_per_s']:.1f} GB/s ({f['copy_tensor_bytes'] / 2**20:.0f} MiB "
        f"tensor, read+write), matmul {f['mm_tflops']:.2f} TFLOP/s ({f['mm_dtype']} "
        f"{f['mm_size']}^3) | timing: {data['mode']['timing']}",
    ]
    for name, info in data["backends"].items():
        if not info["usable"]:
            lines.append(f"skipped backend {name}: {info['reason']}")
    return lines


def format_report(data: dict[str, Any]) -> str:
    """The human-readable table for a run's JSON (as written by bench/run.py)."""
    lines = _header(data)
    lines += ["", _row(COLUMNS), _row(tuple("-" * w for w in WIDTHS))]
    notes: list[str] = []
    verdicts: list[str] = []
    for wl in data["workloads"]:
        target = Target.from_json(wl.get("target"))
        results = wl["results"]
        status, reason = verdict(target, results)
        names = list(results) or ["-"]
        row = target.row if target else "tilefuse"
        judged = row if row in results else names[-1]
        if wl.get("error"):
            notes.append(f"[{len(notes) + 1}] {wl['name']}: {wl['error'].splitlines()[0]}")
            lines.append(_row((wl["name"], "-", f"ERROR [{len(notes)}]", "", "", "", "", "")))
            continue
        for i, name in enumerate(names):
            r = results.get(name, {})
            if r.get("skipped"):
                ms = "skip"
            elif r.get("error"):
                first = r["error"].strip().splitlines()[0] if r["error"].strip() else "error"
                notes.append(f"[{len(notes) + 1}] {wl['name']} / {name}: {first}")
                ms = f"ERR [{len(notes)}]"
            else:
                ms = _num(r.get("ms"), ".4f")
            last = name == judged
            lines.append(
                _row(
                    (
                        wl["name"] if i == 0 else "",
                        name,
                        ms,
                        _num(r.get("pct_of_floor"), ".1f"),
                        _num(r.get("compile_s"), ".2f"),
                        _num(r.get("kernels"), "d"),
                        target.describe() if last and target else "",
                        status if last else "",
                    )
                )
            )
        if target is not None and target.row in results:
            verdicts.append(f"{wl['name']}: {status}: {reason}")
    if verdicts:
        lines += ["", "verdicts (tilefuse against the target):", *("  " + v for v in verdicts)]
    if notes:
        lines += ["", "errors:", *("  " + n for n in notes)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the table of a saved bench run.")
    parser.add_argument("file", type=Path, help="a JSON file written by bench/run.py")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    print(format_report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
