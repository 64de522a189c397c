"""Host overhead per call: ``python bench/host_overhead.py [--ks 1,10,100] [--models vit,gpt2]``.

What a compiled call costs the CPU, for graphs whose kernels are tiny, compared across
wrappers in one process: eager; tilefuse with its Python wrapper, its C++ wrapper, and its
C++ wrapper under CUDA graphs (``mode="reduce-overhead"``); Inductor default, with
``options={"cpp_wrapper": True}`` and under CUDA graphs.

Workloads:
- ``chain-K``: K dependent steps ``s = tanh((w * s).sum(1))`` on an 8-element vector. Each
  step needs every element of the previous step's result (a matrix-vector product), so no
  compiler can fuse two steps into one kernel: K kernels per call (the multiply fuses into
  the reduction as its prologue, the tanh as its epilogue). Kernels are counted per call
  (torch.profiler on the GPU) and, for tilefuse, from its compile reports.
- ``<model>-b1``: batch-1 bf16 inference of zoo models (``bench/zoo.py``), checked against
  the fp32 reference as ``bench/models.py`` checks them.

Per (workload, column): ``host_us``, the CPU-side wall time of one call (the median over
samples of a few back-to-back calls without synchronizing, each sample drained by a
synchronize outside its timing; few enough calls that the launch queue never fills),
``wall_us``, one call followed by ``torch.cuda.synchronize()`` (median), ``kernels`` per
call, ``compile_s``, tilefuse's counters (which wrapper ran, fallbacks) and the warnings it
logged. A column whose mode warns that it is not built (tilefuse's reduce-overhead before
CUDA-graph replay lands) is recorded as ``unavailable`` with the warning. Correctness is
checked before any time is taken. Prints a table and the issue's targets, and writes
``<out>/host-overhead_<device-slug>_<YYYY-MM-DD>_<HHMM>.json`` after every row.
``--smoke`` runs tiny sizes on the CPU (through the Triton interpreter) in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import backends, models, run, zoo  # noqa: E402
from bench.timing import Timer  # noqa: E402

SCHEMA_VERSION = 1
DEFAULT_KS = (1, 10, 100)
SMOKE_KS = (1, 3)
DEFAULT_MODELS = ("vit", "gpt2")
CHAIN_WIDTH = 8
CHAIN_TOLERANCE = 1e-4
# Back-to-back calls per host-time sample: 5 calls of a 100-kernel graph stay well under
# the driver's launch queue (about a thousand launches), so a sample never waits on the GPU.
CALLS_PER_SAMPLE = 5
SAMPLES = {"full": (5, 60, 200), "quick": (3, 20, 60), "smoke": (1, 2, 2)}  # warmup, host, wall
TILEFUSE_COUNTERS = ("graphs_compiled", "graphs_fallen_back", "cpp_wrappers",
                     "cpp_wrapper_fallbacks")  # fmt: skip
UNBUILT_MARKERS = ("not built",)  # a compile mode's warning that it runs as another
SMOKE_COLUMNS = ("eager", "tilefuse_py", "tilefuse_cpp", "tilefuse_cpp_cg")
# The targets: on the 10- and 100-kernel graphs the C++ wrapper's host time is at
# most Inductor cpp_wrapper's and at most half the Python wrapper's.
TARGET_KS = (10, 100)

_log = run._log


@dataclass(frozen=True)
class Column:
    """One way of running a workload: ``family`` (eager, inductor, tilefuse) and what
    ``torch.compile`` is given."""

    name: str
    family: str
    mode: str | None = None
    options: dict[str, Any] | None = None
    env: tuple[tuple[str, str], ...] = ()  # set while it compiles and runs

    @property
    def compiles(self) -> bool:
        return self.family != "eager"

    def prepare(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not self.compiles:
            return fn
        backend = "tilefuse" if self.family == "tilefuse" else "inductor"
        return torch.compile(fn, backend=backend, mode=self.mode, options=self.options)


COLUMNS = (
    Column("eager", "eager"),
    Column("tilefuse_py", "tilefuse", options={"cpp_wrapper": False}),
    Column("tilefuse_cpp", "tilefuse", options={"cpp_wrapper": True}),
    # torch.compile takes a mode or options, not both: the C++ wrapper through its variable
    Column("tilefuse_cpp_cg", "tilefuse", "reduce-overhead", env=(("TILEFUSE_CPP_WRAPPER", "1"),)),
    Column("inductor", "inductor"),
    Column("inductor_cpp", "inductor", options={"cpp_wrapper": True}),
    Column("inductor_cg", "inductor", "reduce-overhead"),
)
BY_NAME = {c.name: c for c in COLUMNS}


# ---- workloads ---------------------------------------------------------------------------


@dataclass
class Workload:
    """``fn(*inputs)`` under no_grad; ``check(output)`` returns what is wrong with a
    column's output, or ``None``; ``steps`` is the number of kernels no compiler can go
    below (a chain's length; ``None`` for a model)."""

    name: str
    fn: Callable[..., Any]
    inputs: tuple[Any, ...]
    check: Callable[[Any], str | None]
    steps: int | None = None
    shape: str = ""


def chain_fn(k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """K dependent matrix-vector steps: one kernel each, none fusable with the next."""

    def chain(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        for _ in range(k):
            s = torch.tanh((w * s).sum(1))
        return s

    chain.__name__ = f"chain{k}"
    return chain


def chain_workload(k: int, device: torch.device) -> Workload:
    gen = torch.Generator().manual_seed(k)
    w = (torch.randn(CHAIN_WIDTH, CHAIN_WIDTH, generator=gen) / CHAIN_WIDTH**0.5).to(device)
    s = torch.randn(CHAIN_WIDTH, generator=gen).to(device)
    fn = chain_fn(k)
    expected = fn(w, s)

    def check(out: Any) -> str | None:
        if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
            return f"wrong output {type(out).__name__}"
        if not torch.allclose(out, expected, rtol=CHAIN_TOLERANCE, atol=CHAIN_TOLERANCE):
            return f"mismatch vs eager: max abs error {(out - expected).abs().max().item():.3g}"
        return None

    return Workload(f"chain-{k}", fn, (w, s), check, k, f"{CHAIN_WIDTH}x{CHAIN_WIDTH}, {k} steps")


def model_workload(zm: zoo.ZooModel, device: torch.device, smoke: bool) -> Workload:
    """Batch-1 bf16 inference of ``zm``, checked against its fp32 eager reference."""
    zm1 = zoo.with_batch(zm, 1)
    torch.manual_seed(0)
    pristine = zm1.make(smoke).to(device)
    x, _ = zm1.inputs(device, smoke)
    reference = models.reference_outputs(zm1, pristine, (x, None), models.INFER_BF16)
    prepared = models.prepare(zm1, pristine, x, None, models.INFER_BF16)
    eager_error, _ = models.relative_error(prepared.step(prepared.fn)(), reference)
    limit = models.allowed_error(models.INFER_BF16, eager_error)

    def check(out: Any) -> str | None:
        err, where = models.relative_error([out], reference)
        if limit is None or not err <= limit:
            return f"mismatch vs the fp32 reference: {where}: relative L2 error {err:.3g}"
        return None

    bf16_x = x.to(torch.bfloat16) if x.is_floating_point() else x
    return Workload(f"{zm.name}-b1", prepared.fn, (bf16_x,), check, None, zm1.shape(smoke))


# ---- measuring one (workload, column) ----------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def tilefuse_warnings() -> Iterator[list[str]]:
    """The warnings tilefuse logs inside the block."""
    handler = _Warnings()
    logger = logging.getLogger("tilefuse")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def unavailable_reason(column: Column, warnings: Sequence[str]) -> str | None:
    """Why ``column``'s mode is not built (it would run as another), if it is not: tilefuse's
    table of unbuilt modes, or a warning logged while it compiled saying so (tilefuse warns
    once per process, so the table is asked first)."""
    if column.mode is None:
        return None
    if column.family == "tilefuse":
        try:
            from tilefuse import compile_options
        except ImportError:
            return None
        unbuilt = getattr(compile_options, "UNBUILT_MODES", {})
        if column.mode in unbuilt:
            return f"mode={column.mode!r}: {unbuilt[column.mode]}"
    for message in warnings:
        if column.mode in message and any(m in message for m in UNBUILT_MARKERS):
            return message
    return None


def _tilefuse_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = [*TILEFUSE_COUNTERS, *sorted(k for k in after if k.startswith("cuda_graph"))]
    return backends.counter_delta(before, after, keys)


def host_and_wall_us(
    call: Callable[[], Any], sync: Callable[[], None], budget: str
) -> tuple[float, float]:
    """(host µs, wall µs) of one call of ``call``; see the module docstring."""
    warmup, host_samples, wall_samples = SAMPLES[budget]
    calls = CALLS_PER_SAMPLE if budget != "smoke" else 1
    for _ in range(warmup):
        call()
    sync()
    host = []
    for _ in range(host_samples):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        host.append((time.perf_counter() - start) / calls)
        sync()
    wall = []
    for _ in range(wall_samples):
        start = time.perf_counter()
        call()
        sync()
        wall.append(time.perf_counter() - start)
    return statistics.median(host) * 1e6, statistics.median(wall) * 1e6


def measure(
    work: Workload, column: Column, timer: Timer, budget: str, timeout: float | None
) -> dict[str, Any]:
    """Compile (cold caches), check, time; never raises for the column's failure."""
    result: dict[str, Any] = {"host_us": None, "wall_us": None, "kernels": None,
                              "compile_s": None, "error": None}  # fmt: skip
    before = backends.tilefuse_stats() if column.family == "tilefuse" else {}
    ctx = backends.cold_caches(column.env) if column.compiles else contextlib.nullcontext()
    try:
        from tilefuse.report import collect_reports

        reports_ctx: Any = collect_reports() if column.family == "tilefuse" else None
    except ImportError:
        reports_ctx = None
    warnings: list[str] = []
    try:
        with models.time_limit(timeout), ctx, tilefuse_warnings() as warnings:
            compiled = column.prepare(work.fn)

            def call() -> Any:
                with torch.no_grad():
                    return compiled(*work.inputs)

            timer.synchronize()
            start = time.perf_counter()
            with reports_ctx or contextlib.nullcontext() as reports:
                out = call()
            timer.synchronize()
            if column.compiles:
                result["compile_s"] = time.perf_counter() - start
            if reports is not None:
                result["tilefuse_kernels"] = sum(len(r.kernels) for r in reports)
                result["wrappers"] = sorted({r.wrapper_language for r in reports})
            unavailable = unavailable_reason(column, warnings)
            if unavailable is not None:
                result["unavailable"] = unavailable
                return result
            problem = work.check(out)
            del out
            if problem is not None:
                result["error"] = problem
                return result
            result["host_us"], result["wall_us"] = host_and_wall_us(call, timer.synchronize,
                                                                    budget)  # fmt: skip
            result["kernels"] = timer.count_kernels(call)
    except Exception as exc:  # a column's failure is a result, not the end of the run
        result["error"] = run._error_text(exc)
        result["host_us"] = result["wall_us"] = None
    finally:
        if column.family == "tilefuse":
            result["tilefuse"] = _tilefuse_delta(before, backends.tilefuse_stats())
        result["warnings"] = list(dict.fromkeys(warnings))[:5]
        timer.free_memory()
    return result


# ---- the run -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=_ints, default=None, metavar="K[,K]",
                   help=f"chain lengths (default {','.join(map(str, DEFAULT_KS))}; "
                   f"smoke {','.join(map(str, SMOKE_KS))}; 'none' for none)")  # fmt: skip
    p.add_argument("--models", type=run._csv, default=None, metavar="M[,M]",
                   help=f"zoo models, batch 1 (default {','.join(DEFAULT_MODELS)}; smoke: "
                   "none unless named; 'none' for none)")  # fmt: skip
    p.add_argument("--columns", type=run._csv, default=None, metavar="C[,C]",
                   help=f"any of {','.join(BY_NAME)} (default: all; smoke: "
                   f"{','.join(SMOKE_COLUMNS)})")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in seconds")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out", type=Path, default=run.DEFAULT_OUT, help="directory for the JSON")
    p.add_argument("--full-timing", action="store_true", help="more samples per figure")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="limit for one column on one workload, compile included")  # fmt: skip
    p.add_argument("--max-total-s", type=float, default=540.0, metavar="S",
                   help="start no new workload after S seconds; the rest are recorded as not "
                   "run (default 540, under a 10-minute command limit)")  # fmt: skip
    args = p.parse_args(argv)
    if args.ks is None:
        args.ks = list(SMOKE_KS if args.smoke else DEFAULT_KS)
    if args.models is None:
        args.models = [] if args.smoke else list(DEFAULT_MODELS)
    args.models = [m for m in args.models if m != "none"]
    if args.columns is None:
        args.columns = list(SMOKE_COLUMNS if args.smoke else BY_NAME)
    unknown = [c for c in args.columns if c not in BY_NAME]
    if unknown:
        p.error(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return args


def _ints(text: str) -> list[int]:
    if text.strip() == "none":
        return []
    values = [int(v) for v in run._csv(text)]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: positive integers, comma-separated")
    return values


def workloads(
    args: argparse.Namespace, device: torch.device, over: Callable[[], str | None]
) -> Iterator[Workload | dict]:
    """Each workload, or the row of one that is not run: a missing library, a model that
    could not be built, or ``over()`` saying the time budget is spent."""
    for k in args.ks:
        why = over()
        yield {"workload": f"chain-{k}", "error": why, "results": {}} if why else (
            chain_workload(k, device))  # fmt: skip
    for zm in zoo.select(args.models) if args.models else []:
        missing = zoo.library_missing(zm) or over()
        if missing:
            yield {"workload": f"{zm.name}-b1", "error": missing, "results": {}}
            continue
        try:
            yield model_workload(zm, device, args.smoke)
        except Exception as exc:
            yield {
                "workload": f"{zm.name}-b1",
                "results": {},
                "error": f"building the model or its reference failed: {run._error_text(exc)}",
            }


def run_all(args: argparse.Namespace, path_out: list[Path] | None = None) -> dict[str, Any]:
    """Every workload under every column; the JSON-ready dict, written after every row."""
    started = time.monotonic()
    device = run.pick_device(args.device, args.smoke)
    timer = Timer(device, quick=not args.full_timing)
    budget = "smoke" if args.smoke and device.type == "cpu" else (
        "full" if args.full_timing else "quick")  # fmt: skip
    columns = [BY_NAME[c] for c in args.columns]
    unusable = {c.name: _unusable(c, device) for c in columns}
    data: dict[str, Any] = run.result_header(SCHEMA_VERSION, device, {
        "smoke": args.smoke, "ks": args.ks, "models": args.models,
        "columns": args.columns, "budget": budget,
        "calls_per_sample": CALLS_PER_SAMPLE if budget != "smoke" else 1,
        "samples": dict(zip(("warmup", "host", "wall"), SAMPLES[budget]))})  # fmt: skip
    machine = data["machine"]
    _log(f"device: {device} ({machine['device']})")
    data |= {
        "columns": {c.name: {"family": c.family, "mode": c.mode, "options": c.options,
                             "env": dict(c.env), "usable": unusable[c.name] is None,
                             "reason": unusable[c.name]}
                    for c in columns},
        "rows": [],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = run.output_path(args.out, f"host-overhead {machine['device']}", run.created_at(data))
    if path_out is not None:
        path_out.append(path)

    def over() -> str | None:
        return run.over_budget(started, args.max_total_s)

    for work in workloads(args, device, over):
        if isinstance(work, dict):
            data["rows"].append(work)
            run.write_json(path, data)
            continue
        row: dict[str, Any] = {"workload": work.name, "shape": work.shape, "steps": work.steps,
                               "results": {}, "error": None}  # fmt: skip
        for column in columns:
            if unusable[column.name]:
                row["results"][column.name] = {"skipped": unusable[column.name]}
                continue
            _log(f"  {work.name} / {column.name} ...")
            r = measure(work, column, timer, budget, args.timeout)
            _log(f"    {_cell(r)}")
            row["results"][column.name] = r
        data["rows"].append(row)
        run.write_json(path, data)
    data["targets"] = targets(data["rows"])
    data["elapsed_s"] = time.monotonic() - started
    run.write_json(path, data)
    return data


def _unusable(column: Column, device: torch.device) -> str | None:
    spec = backends.BackendSpec(column.name, column.family, {} if column.compiles else None)
    return backends.unusable_reason(spec, device)


# ---- the report --------------------------------------------------------------------------


def _cell(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return "skipped"
    if r.get("unavailable"):
        return "unavailable"
    if r.get("error"):
        return "error"
    if r.get("host_us") is None:
        return "-"
    kernels = r.get("kernels")
    if kernels is None:
        kernels = r.get("tilefuse_kernels")
    k = f" k{kernels}" if kernels is not None else ""
    return f"{r['host_us']:.1f}/{r['wall_us']:.1f}{k}"


def _host(row: dict[str, Any], name: str) -> float | None:
    return (row["results"].get(name) or {}).get("host_us")


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's host-time targets on the chain-10 and chain-100 rows: ``ok`` is
    ``None`` where a figure is missing."""
    out = []
    for row in rows:
        if row.get("steps") not in TARGET_KS:
            continue
        cpp, py, ind = (_host(row, n) for n in ("tilefuse_cpp", "tilefuse_py", "inductor_cpp"))
        checks = [
            ("tilefuse_cpp host <= inductor_cpp host", cpp, ind, 1.0),
            ("tilefuse_cpp host <= 0.5 x tilefuse_py host", cpp, py, 0.5),
        ]
        for what, a, b, factor in checks:
            ok = None if a is None or b is None else a <= factor * b
            out.append({"workload": row["workload"], "target": what, "ok": ok,
                        "value_us": a, "bound_us": None if b is None else factor * b})  # fmt: skip
    return out


def format_table(data: dict[str, Any]) -> str:
    names = list(data["columns"])
    cells_of = {n: [_cell(row["results"].get(n, {})) for row in data["rows"]] for n in names}
    width = {n: 2 + max(len(n), *(len(c) for c in cells_of[n])) for n in names}
    head = f"{'workload':16s}" + "".join(f"{n:>{width[n]}s}" for n in names)
    lines = [
        "host µs / wall µs per call (k: kernels per call)",
        head,
        "-" * len(head),
    ]
    for row in data["rows"]:
        cells = [_cell(row["results"].get(n, {})) for n in names]
        if row.get("error") and not row["results"]:
            cells = [f"error: {row['error'][:60]}"]
            lines.append(f"{row['workload']:16s} " + cells[0])
            continue
        lines.append(
            f"{row['workload']:16s}" + "".join(f"{c:>{width[n]}s}" for n, c in zip(names, cells))
        )
    notes = []
    for row in data["rows"]:
        for name, r in row["results"].items():
            why = r.get("unavailable") or r.get("error")
            if why:
                kind = "unavailable" if r.get("unavailable") else "error"
                notes.append(f"  {row['workload']} / {name} {kind}: {why.splitlines()[0][:160]}")
    if notes:
        lines += ["", "notes:", *list(dict.fromkeys(notes))]
    if data.get("targets"):
        lines += ["", "targets (host time):"]
        for t in data["targets"]:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["ok"]]
            detail = "" if t["ok"] is None else (
                f" ({t['value_us']:.1f} vs {t['bound_us']:.1f} µs)")  # fmt: skip
            lines.append(f"  {t['workload']}: {t['target']}: {verdict}{detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths: list[Path] = []
    try:
        data = run_all(args, paths)
    except ValueError as exc:  # unknown model names
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(data))
    print(f"\nwrote {paths[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
