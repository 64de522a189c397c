"""Warm start from the remote cache: ``python bench/remote_cache.py [--workloads W,...]``.

Starts a ``redis-server`` on a free loopback port, then compiles the same workloads
(``bench/workloads.py``; default: the two GEMM rows and layer_norm) in three fresh
processes, all with ``TILEFUSE_AUTOTUNE=max`` and ``TILEFUSE_STRICT=1``:

1. ``cold``: empty local caches (tilefuse's and Triton's) and the empty remote cache: it
   builds, benchmarks and publishes everything. It waits for its nvcc builds
   (``TILEFUSE_AUTOTUNE_BUILD_WAIT_S=600``): a max-mode search that measured without them
   stores a provisional winner, which a later max-mode process tunes again;
2. ``warm_remote``: empty local caches of its own (another machine) and the remote cache
   that 1 filled;
3. ``warm_local``: 1's local caches and no remote cache.

Each process times its first calls (the compiles; every result is checked against eager)
and reports ``tilefuse.stats()``. The issue's target: process 2 builds nothing
(``triton_compiles``, ``artifacts_built`` and ``autotune_benchmarks`` are 0) and its compile
time is at most 1.2x process 3's. Writes ``<out>/remote-cache_<device-slug>_<date>.json``.
``--smoke`` runs tiny shapes on the CPU (Triton's interpreter: nothing compiles there).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_WORKLOADS = ("gemm_bias_relu", "mlp_gelu", "layer_norm")
TARGET_RATIO = 1.2
BUILD_COUNTERS = ("triton_compiles", "artifacts_built", "autotune_benchmarks")
REPORTED = (*BUILD_COUNTERS, "graphs_compiled", "graphs_fallen_back", "remote_hits",
            "remote_misses", "remote_rejected", "remote_stores", "remote_errors")  # fmt: skip
CHILD_TIMEOUT_S = 900.0
SCHEMA_VERSION = 1


def child(names: list[str], device_name: str, smoke: bool, timeout_s: float) -> dict[str, Any]:
    """Compile and check each workload once in this process; its seconds and counters."""
    import torch

    import tilefuse
    from bench import workloads

    # A process that hangs shows where: every thread's stack, on stderr, before the parent
    # gives up on it.
    faulthandler.dump_traceback_later(max(timeout_s - 15.0, 1.0), exit=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    device = torch.device(device_name)
    seconds = {}
    for work in workloads.select(names):
        case = work.build(device, smoke)
        compiled = case.step(torch.compile(case.fn, backend="tilefuse"))
        start = time.perf_counter()
        got = compiled()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[work.name] = time.perf_counter() - start
        for g, want in zip(got, case.step(case.fn)(), strict=True):
            torch.testing.assert_close(g.float(), want.float(), rtol=2e-2, atol=2e-2)
    stats = tilefuse.stats()
    return {"seconds": seconds, "compile_s": sum(seconds.values()),
            "stats": {name: stats.get(name, 0) for name in REPORTED}}  # fmt: skip


def _run_child(
    args: argparse.Namespace, caches: Path, remote: str | None, extra_env: dict[str, str]
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEFUSE_")}
    env.update(
        TILEFUSE_CACHE_DIR=str(caches / "tilefuse"),
        TRITON_CACHE_DIR=str(caches / "triton"),
        TILEFUSE_AUTOTUNE="max",
        TILEFUSE_STRICT="1",
    )
    if args.cuda_max_candidates:
        env["TILEFUSE_CUDA_MAX_CANDIDATES"] = str(args.cuda_max_candidates)
    env.update(extra_env)
    if remote:
        env["TILEFUSE_REMOTE_CACHE"] = remote
    smoke = ["--smoke"] if args.smoke else []
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--device", args.device,
           "--workloads", ",".join(args.workloads), "--child-timeout", str(args.child_timeout),
           *smoke]  # fmt: skip
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=args.child_timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        err = expired.stderr or b""
        text = err.decode(errors="replace") if isinstance(err, bytes) else err
        raise RuntimeError(f"a compile process ran past {args.child_timeout:g} s; the end "
                           f"of its log:\n{text[-6000:]}") from None  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"a compile process failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["autotune_log"] = [line for line in done.stderr.splitlines() if "autotune" in line]
    return row


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from tests.redis_server import running_redis

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tilefuse-remote-bench-") as tmp:
        root = Path(tmp)
        with running_redis(root / "redis") as url:
            cold = {"TILEFUSE_AUTOTUNE_BUILD_WAIT_S": "600"}
            for name, caches, remote, env in (("cold", "a", url, cold),
                                              ("warm_remote", "b", url, {}),
                                              ("warm_local", "a", None, {})):  # fmt: skip
                print(f"{name} ...", flush=True)
                rows[name] = _run_child(args, root / caches, remote, env)
                print(f"  {rows[name]['compile_s']:.2f} s, {rows[name]['stats']}", flush=True)
                for line in rows[name]["autotune_log"]:
                    print(f"  {line[:300]}", flush=True)
    return rows


def verdict(rows: dict[str, Any]) -> list[str]:
    """The issue's target, read from the three rows."""
    remote, local = rows["warm_remote"], rows["warm_local"]
    built = {k: remote["stats"][k] for k in BUILD_COUNTERS if remote["stats"][k]}
    ratio = remote["compile_s"] / max(local["compile_s"], 1e-9)
    return [
        f"warm remote builds nothing: {'met' if not built else f'MISSED ({built})'}",
        f"warm remote compile {remote['compile_s']:.2f} s vs warm local {local['compile_s']:.2f} s"
        f" = {ratio:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", type=lambda s: s.split(","), default=list(DEFAULT_WORKLOADS))
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for the JSON")
    p.add_argument("--child-timeout", type=float, default=CHILD_TIMEOUT_S, metavar="S",
                   help="limit for one compile process (default %(default)s)")  # fmt: skip
    p.add_argument("--cuda-max-candidates", type=int, default=None, metavar="N",
                   help="TILEFUSE_CUDA_MAX_CANDIDATES for every process: fewer nvcc builds in "
                   "the cold one")  # fmt: skip
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.workloads, args.device, args.smoke, args.child_timeout)))
        return 0
    import torch

    from bench import run

    rows = run_all(args)
    lines = verdict(rows)
    print("\n".join(lines))
    device = torch.device(args.device)
    data = run.result_header(SCHEMA_VERSION, device, {"workloads": args.workloads,
                                                      "smoke": args.smoke})  # fmt: skip
    data.update(rows=rows, verdict=lines)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"remote-cache {data['machine']['device']}"
    path = run.output_path(args.out, name, run.created_at(data))
    run.write_json(path, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
