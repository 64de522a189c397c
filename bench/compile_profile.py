"""Where a cold compile's time goes, symbolic against static:
``python bench/compile_profile.py [--workload block] [--seq 128]``.

After ``bench/dynamic.py``'s warm-up (one-time process costs charged to neither), the
first call of ``tilefuse_symbolic`` and of ``tilefuse_static`` at one length, each with
cold caches, under cProfile (the calling thread only: kernel builds in worker threads
show in the counters, not the profile). Prints each one's wall seconds, the cumulative
seconds of the compile phases (Dynamo's trace, AOT autograd, tilefuse's lowering, scheduling,
codegen and kernel builds, the first run) side by side, then each one's top functions by
cumulative time. Issue 15's cold-compile target is the ratio of the two first calls.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import backends, dynamic, models, run  # noqa: E402
from bench.timing import Timer  # noqa: E402

# (label, file fragment, function name): cumulative time of the first match in the profile
PHASES = (
    ("dynamo: convert_frame", "_dynamo/convert_frame.py", "_compile"),
    ("aot autograd", "_functorch/aot_autograd.py", "aot_module_simplified"),
    ("tilefuse compile_graph", "tilefuse/pipeline.py", "compile_graph"),
    ("  lowering", "tilefuse/frontend/lowering.py", "run"),
    ("  schedule_graph", "tilefuse/scheduler/schedule.py", "schedule_graph"),
    ("  kernel codegen", "tilefuse_triton/scheduling.py", "codegen"),
    ("  build_kernels", "tilefuse/codegen/kernels.py", "build_kernels"),
    ("  GEMM templates", "tilefuse/codegen/templates.py", "select_template"),
    ("triton compile", "triton/compiler/compiler.py", "compile"),
    ("sympy simplify", "sympy/simplify/simplify.py", "simplify"),
)


# tilefuse.stats() counters printed per column: what the first call compiled, and where
COUNTERS = ("kernels_compiled", "triton_compiles", "triton_call_specializations",
            "triton_own_launch_kernels", "templates", "gemm_bucket_selections")  # fmt: skip


def _phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    table = stats.stats  # type: ignore[attr-defined]
    for label, fragment, name in PHASES:
        best = 0.0
        for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in table.items():
            if func == name and path.endswith(fragment):
                best = max(best, ct)
        out[label] = best
    return out


def _top(stats: pstats.Stats, n: int) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(n)
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line[:200] for line in lines[start:])


def profile_first_call(sweep: dynamic._Sweep, column: dynamic.Column, seq: int) -> dict:
    """Wall seconds, phase seconds and the profile of ``column``'s first call at ``seq``."""
    import tilefuse

    x = sweep.input(seq, column.mark)
    profiler = cProfile.Profile()
    before = tilefuse.stats()
    with backends.cold_caches(column.env(True)):
        compiled = torch.compile(sweep.fn, **column.compile_kwargs)
        sweep.timer.synchronize()
        start = time.perf_counter()
        profiler.enable()
        with torch.no_grad():
            compiled(x)
        sweep.timer.synchronize()
        profiler.disable()
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    after = tilefuse.stats()
    counts = {k: after[k] - before.get(k, 0) for k in COUNTERS if k in after}
    return {"wall_s": wall, "phases": _phase_seconds(stats), "stats": stats, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="block", choices=sorted(dynamic.WORKLOADS))
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--top", type=int, default=30, help="functions listed per column")
    p.add_argument("--smoke", action="store_true", help="tiny configs (the CPU)")
    args = p.parse_args(argv)
    device = run.pick_device("auto", args.smoke)
    timer = models.SmokeTimer(device, quick=True) if device.type == "cpu" else Timer(device)
    columns = [dynamic.BY_NAME["tilefuse_symbolic"], dynamic.BY_NAME["tilefuse_static"]]
    dynamic.warm_up(columns, {}, timer, True)
    sweep = dynamic._Sweep(dynamic.WORKLOADS[args.workload], [args.seq], timer, args.smoke)
    results = {c.name: profile_first_call(sweep, c, args.seq) for c in columns}
    sym, static = results["tilefuse_symbolic"], results["tilefuse_static"]
    print(f"{args.workload} at {args.seq} on {device}: first call (cold compile), seconds")
    print(f"{'':28s}{'symbolic':>10s}{'static':>10s}")
    print(f"{'wall':28s}{sym['wall_s']:10.2f}{static['wall_s']:10.2f}")
    for label in sym["phases"]:
        print(f"{label:28s}{sym['phases'][label]:10.2f}{static['phases'][label]:10.2f}")
    print(f"ratio {sym['wall_s'] / static['wall_s']:.2f}x (target <= {dynamic.MAX_COMPILE_RATIO})")
    print("tilefuse.stats() during the first call:")
    for key in COUNTERS:
        a, b = sym["counts"].get(key, "-"), static["counts"].get(key, "-")
        print(f"  {key:34s}{a!s:>10s}{b!s:>10s}")
    for name, result in results.items():
        print(f"\n== {name}: top {args.top} by cumulative time ==")
        print(_top(result["stats"], args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
