"""Run the benchmark suite: ``python bench/run.py [--only A,B] [--backends ...] [--quick]``.

Measures the machine's floors, then every workload under every backend (eager, Inductor,
tilefuse) in this one process: median time, % of floor, cold-cache compile time and kernels per
call. A backend that fails or mismatches eager on a workload records the error and the suite
goes on. Prints the table and writes ``<out>/<device-slug>_<YYYY-MM-DD>_<HHMM>.json``.
``--smoke`` runs tiny shapes (on the CPU where there is no GPU) to check the harness itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata as md
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import backends, checks, floors, report, workloads  # noqa: E402
from bench.backends import BackendSpec  # noqa: E402
from bench.targets import verdict  # noqa: E402
from bench.timing import Timer  # noqa: E402

SCHEMA_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# Timing rounds per workload kind, interleaved across columns (see run_workload). GEMMs and the
# training step are power-limited and drift by several % with when they run; memory-bound
# rows differ from Inductor by under 1% (layer_norm, rms_norm) while one row's time moves
# about 0.5% between runs, so they take the median of 3 rounds as well.
DEFAULT_ROUNDS = {workloads.GEMM: 3, workloads.TRAINING: 3, workloads.MEMORY: 3}
ERROR_CHARS = 4000
RESULT_KEYS = ("ms", "pct_of_floor", "compile_s", "kernels", "error")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", type=_csv, default=[], metavar="NAME[,NAME]", help="workloads")
    p.add_argument(
        "--backends",
        type=_csv,
        default=list(backends.FAMILIES),
        metavar="B[,B]",
        help="any of eager,inductor,tilefuse (default: all); inductor includes "
        "max-autotune-no-cudagraphs on the GEMM workloads",
    )
    p.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    p.add_argument("--smoke", action="store_true", help="tiny shapes: checks the harness")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON file")
    p.add_argument(
        "--allow-fallback",
        action="store_true",
        help="do not set TILEFUSE_STRICT=1 for tilefuse (default: a fallback to eager is an "
        "error, so eager's time is never reported as tilefuse's)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="timing rounds per workload, interleaved across columns (default: 3)",
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep tilefuse's nvcc builds in DIR across runs: each tilefuse column starts with "
        "them in its fresh cache (winners and Triton caches stay cold) and saves new ones back",
    )
    p.add_argument(
        "--autotune-timeline",
        action="store_true",
        help="log the autotuner's timeline (each build and measurement, in seconds from the "
        "selection's start) to stderr: where a max-mode compile's time goes",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args(argv)


def log_autotune_timeline() -> None:
    """Send the ``tilefuse.autotune`` logger's DEBUG records (its timeline lines) to stderr,
    the benchmark workers' included (each candidate's build, check and timing phases)."""
    logger = logging.getLogger("tilefuse.autotune")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    os.environ["TILEFUSE_AUTOTUNE_WORKER_LOG"] = "DEBUG"  # and each candidate's phases


def pick_device(choice: str, smoke: bool) -> torch.device:
    """The device to measure on. Raises ``SystemExit`` when the choice cannot be honoured."""
    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    device = torch.device(
        "cuda" if (choice == "cuda" or (choice == "auto" and has_cuda)) else "cpu"
    )
    if device.type == "cpu" and not smoke:
        raise SystemExit(
            "the full-size workloads need a CUDA GPU and none is visible; "
            "use --smoke for the CPU smoke test of the harness"
        )
    return device


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    tilefuse_dists = {
        d.metadata["Name"]: d.version
        for d in md.distributions()
        if (d.metadata["Name"] or "").lower().startswith("tilefuse")
    }
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton") or _version("pytorch-triton"),
        "tilefuse": _version("tilefuse-core"),
        "tilefuse_packages": dict(sorted(tilefuse_dists.items())),
        "python": platform.python_version(),
    }


def result_header(schema: int, device: torch.device, mode: dict[str, Any]) -> dict[str, Any]:
    """The keys every results JSON opens with, in this order: ``schema`` (the writing
    tool's own format version), ``created`` (now, local time, ISO to the second),
    ``machine`` (``machine_info(device)``) and ``mode`` (the run's settings, as given).
    ``created_at(header)`` reads the time back, for ``output_path``."""
    return {
        "schema": schema,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "mode": mode,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename), so a reader
    or a killed run never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def over_budget(started: float, max_total_s: float) -> str | None:
    """Why the next workload is not run (``--max-total-s`` spent since ``started``, a
    ``time.monotonic()``), or ``None`` while time is left."""
    spent = time.monotonic() - started
    if spent <= max_total_s:
        return None
    return f"not run: {spent:.0f} s spent, past --max-total-s {max_total_s:.0f}"


def created_at(data: dict[str, Any]) -> dt.datetime:
    """The ``created`` time of a dict that ``result_header`` opened."""
    return dt.datetime.fromisoformat(data["created"])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def output_path(out_dir: Path, device_name: str, when: dt.datetime) -> Path:
    """``<out_dir>/<device-slug>_<YYYY-MM-DD>_<HHMM>.json``, suffixed ``_2``... if taken."""
    stem = f"{slug(device_name)}_{when:%Y-%m-%d_%H%M}"
    path = out_dir / f"{stem}.json"
    n = 2
    while path.exists():
        path = out_dir / f"{stem}_{n}.json"
        n += 1
    return path


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " ...[truncated]"


def empty_result() -> dict[str, Any]:
    return dict.fromkeys(RESULT_KEYS)


def _clear_grads(case: workloads.Case) -> None:
    for leaf in case.grad_leaves:
        leaf.grad = None


def reference_outputs(case: workloads.Case) -> list[torch.Tensor]:
    """Eager's outputs for ``case``, cloned so later steps cannot change them."""
    _clear_grads(case)
    with torch.no_grad() if case.grad_out is None else contextlib.nullcontext():
        outputs = case.step(case.fn)()
    refs = [o.detach().clone() if o is not None else None for o in outputs]
    _clear_grads(case)
    return refs


def measure_backend(
    case: workloads.Case,
    spec: BackendSpec,
    timer: Timer,
    reference: list[torch.Tensor],
    tol: checks.Tolerance,
    norm: bool,
    keep: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Compile (cold caches), check against ``reference``, time and count kernels.

    Never raises for a backend's failure: the error text goes in the result's ``error``.
    When ``keep`` is given, a correctly measured step is stored there under the column's
    name, for later interleaved rounds.
    """
    result = empty_result()
    ctx = backends.cold_caches(spec.env) if spec.compiles else contextlib.nullcontext()
    reports = _tilefuse_reports() if spec.family == "tilefuse" else contextlib.nullcontext([])
    try:
        with ctx, reports as compiled_graphs:
            step = case.step(spec.prepare(case.fn))
            _clear_grads(case)
            timer.synchronize()
            start = time.perf_counter()
            outputs = step()
            timer.synchronize()
            if spec.compiles:
                result["compile_s"] = time.perf_counter() - start
            if spec.family == "tilefuse":
                backends.wait_for_tilefuse_builds()  # timed after its C++ wrappers load
                result["autotune"] = [line for r in compiled_graphs for line in r.autotune]
            problem = checks.mismatch(outputs, reference, tol, norm)
            del outputs
            if problem is not None:
                result["error"] = f"mismatch vs eager: {problem}"
            else:
                result["ms"] = timer.median_ms(step, case.grad_leaves)
                result["kernels"] = timer.count_kernels(step, case.grad_leaves)
                if keep is not None:
                    keep[spec.name] = step
            del step
    except Exception as exc:  # a backend's failure is a result, not the end of the suite
        result["error"] = _error_text(exc)
        result["ms"] = None
        if keep is not None:  # failed after its timing (say, cleaning up): no more rounds
            keep.pop(spec.name, None)
    finally:
        _clear_grads(case)
        timer.free_memory()
    return result


def _tilefuse_reports() -> contextlib.AbstractContextManager[list[Any]]:
    """A block collecting the report of each graph tilefuse compiles inside it (their
    ``autotune`` lines are the autotuner's summaries); an empty list without tilefuse."""
    try:
        from tilefuse.report import collect_reports
    except ImportError:
        return contextlib.nullcontext([])
    return collect_reports()


def rounds_for(kind: str, requested: int | None) -> int:
    """Timing rounds for a workload kind: ``requested`` when given, else ``DEFAULT_ROUNDS``."""
    return requested if requested else DEFAULT_ROUNDS.get(kind, 1)


def interleave(
    steps: dict[str, Callable[[], Any]],
    timer: Timer,
    case: workloads.Case,
    rounds: int,
    floor_probe: Callable[[], float] | None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``rounds - 1`` more timings of every kept step, round-robin, so a drift in clocks or
    power reaches every column alike. With ``floor_probe`` (the GEMM floor's ms), the probe
    is timed right before each column's timing, so each time has a floor taken in the same
    power state.

    Returns the extra times per column and, per column, the probe times paired with them.
    """
    extra: dict[str, list[float]] = {name: [] for name in steps}
    probes: dict[str, list[float]] = {name: [] for name in steps} if floor_probe else {}
    for _ in range(rounds - 1):
        for name, step in steps.items():
            if floor_probe is not None:
                probes[name].append(floor_probe())
            extra[name].append(timer.median_ms(step, case.grad_leaves))
    return extra, probes


def paired_pct_of_floor(
    case: workloads.Case, times: list[float], probes: list[float], copy_bytes_per_s: float
) -> float:
    """Median over rounds of % of floor, each round's time against the GEMM floor probed
    just before it (``floors.GPU_MM_SIZE`` cubed)."""
    return statistics.median(
        floors.pct_of_floor(
            case.bytes_moved, case.flops, ms, copy_bytes_per_s, floors.GPU_MM_FLOPS / (probe / 1e3)
        )
        for ms, probe in zip(times, probes, strict=True)
    )


def run_workload(
    workload: workloads.Workload,
    columns: list[BackendSpec],
    unusable: dict[str, str | None],
    timer: Timer,
    fl: floors.Floors,
    smoke: bool,
    rounds: int | None = None,
) -> dict[str, Any]:
    """All backend columns for one workload, as its JSON record.

    Each column is compiled, checked and timed once; with more than one round (the default)
    every column is then timed again round-robin and the median over rounds is reported.
    On a workload with flops, the GEMM floor is probed right before each of those timings
    and the column's % of floor is the median over rounds of its time against that probe
    (GEMMs are power-limited: their speed drifts by several % within one run).
    """
    record: dict[str, Any] = {
        "name": workload.name,
        "kind": workload.kind,
        "description": workload.description,
        "target": workload.target.to_json() if workload.target else None,
        "results": {},
        "error": None,
    }
    torch.manual_seed(0)
    try:
        case = workload.build(timer.device, smoke)
        reference = reference_outputs(case)
    except Exception as exc:
        record["error"] = f"building the inputs or eager's reference failed: {_error_text(exc)}"
        timer.free_memory()
        return record
    record.update(shape=case.shape, dtype=str(case.dtype).removeprefix("torch."))
    record.update(bytes=case.bytes_moved, flops=case.flops)
    loosen = 3.0 if workload.kind == workloads.TRAINING else 1.0
    tol = checks.tolerance_for(case.dtype, loosen)
    norm = workload.kind != workloads.MEMORY
    n_rounds = rounds_for(workload.kind, rounds)
    kept: dict[str, Callable[[], Any]] | None = {} if n_rounds > 1 else None
    for spec in columns:
        if not spec.runs_on(workload.kind):
            continue
        reason = unusable.get(spec.name)
        if reason:
            record["results"][spec.name] = {**empty_result(), "skipped": reason}
            continue
        _log(f"  {workload.name} / {spec.name} ...")
        r = measure_backend(case, spec, timer, reference, tol, norm, keep=kept)
        if r["ms"] is None:
            _log(f"    error: {(r['error'] or '').splitlines()[0][:200]}")
        else:
            _log(f"    {r['ms']:.4f} ms")
            for line in r.get("autotune") or []:
                _log(f"    {line}")
        record["results"][spec.name] = r
    mm_rate = fl.mm_flops_per_s
    paired: dict[str, float] = {}
    if kept:
        probe = None
        if case.flops and not smoke:
            probe = floors.matmul_probe(timer, floors.GPU_MM_SIZE)
        _log(f"  {n_rounds - 1} more round(s), interleaved: {', '.join(kept)}")
        extra, probes = interleave(kept, timer, case, n_rounds, probe)
        for name, times in extra.items():
            r = record["results"][name]
            r["ms_rounds"] = [r["ms"], *times]
            r["ms"] = statistics.median(r["ms_rounds"])
            if name in probes:
                r["floor_probe_ms_rounds"] = probes[name]
                paired[name] = paired_pct_of_floor(case, times, probes[name], fl.copy_bytes_per_s)
        all_probes = [p for ps in probes.values() for p in ps]
        if all_probes:
            mm_rate = floors.GPU_MM_FLOPS / (statistics.median(all_probes) / 1e3)
        kept.clear()
    record["floor_ms"] = 1e3 * floors.floor_seconds(
        case.bytes_moved, case.flops, fl.copy_bytes_per_s, mm_rate
    )
    for name, r in record["results"].items():
        if r.get("ms") is not None:
            r["pct_of_floor"] = paired.get(name) or floors.pct_of_floor(
                case.bytes_moved, case.flops, r["ms"], fl.copy_bytes_per_s, mm_rate
            )
            _log(f"  {name}: {r['ms']:.4f} ms, {r['pct_of_floor']:.1f}% of floor")
    status, why = verdict(workload.target, record["results"])
    record["verdict"] = {"status": status, "reason": why}
    del case, reference
    timer.free_memory()
    return record


def warm_up(columns: list[BackendSpec], unusable: dict[str, str | None], timer: Timer) -> None:
    """Compile a trivial function once per compiled family so that one-time process costs
    (imports, Inductor's compile-worker pool) are not charged to the first workload."""
    seen: set[str] = set()
    x = torch.ones(16, device=timer.device)
    for spec in columns:
        if not spec.compiles or unusable.get(spec.name) or spec.family in seen:
            continue
        seen.add(spec.family)
        with contextlib.suppress(Exception), backends.cold_caches(spec.env):
            spec.prepare(lambda t: torch.relu(t + 1))(x)
            timer.synchronize()


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``main`` writes, as the JSON-ready dict."""
    device = pick_device(args.device, args.smoke)
    chosen = workloads.select(args.only)
    columns = backends.specs(args.backends, strict_tilefuse=not args.allow_fallback)
    timer = Timer(device, quick=args.quick)
    unusable = {s.name: backends.unusable_reason(s, device) for s in columns}
    header = result_header(
        SCHEMA_VERSION,
        device,
        {
            "smoke": args.smoke,
            "quick": args.quick,
            "timing": timer.method,
            "tilefuse_strict": not args.allow_fallback,
            "backends": args.backends,
            "only": args.only,
            "rounds": args.rounds,
        },
    )
    _log(f"device: {device} ({header['machine']['device']})")
    _log("measuring floors ...")
    fl = floors.measure_floors(timer, args.smoke)
    _log(f"  copy {fl.copy_bytes_per_s / 1e9:.1f} GB/s, mm {fl.mm_flops_per_s / 1e12:.2f} TFLOP/s")
    warm_up(columns, unusable, timer)
    records = []
    for w in chosen:
        _log(f"{w.name}")
        records.append(run_workload(w, columns, unusable, timer, fl, args.smoke, args.rounds))
    return {
        **header,
        "floors": fl.to_json(),
        "backends": {
            s.name: {
                "family": s.family,
                "compile": s.compile_kwargs,
                "kinds": sorted(s.kinds) if s.kinds else None,
                "usable": unusable[s.name] is None,
                "reason": unusable[s.name],
            }
            for s in columns
        },
        "workloads": records,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.autotune_timeline:
        log_autotune_timeline()
    if args.artifacts is not None:
        args.artifacts.mkdir(parents=True, exist_ok=True)
        os.environ[backends.ARTIFACTS_ENV] = str(args.artifacts.resolve())
    if args.list:
        for w in workloads.WORKLOADS:
            print(f"{w.name:26s} {w.kind:9s} {w.description}")
        return 0
    try:
        data = run_suite(args)
    except ValueError as exc:  # unknown workload or backend names
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = output_path(args.out, data["machine"]["device"], created_at(data))
    write_json(path, data)
    print(report.format_report(data))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
