"""Dynamic shapes: ``python bench/dynamic.py [--workloads block,gpt2] [--seqs 128,...,1024]``.

Issue 15's GPU benchmark. For each workload (a transformer block, zoo decoders; bf16
inference, batch fixed) over a range of sequence lengths, in this one process:

- ``eager``: the module itself;
- ``tilefuse_static``: per sequence length a fresh, cold compile with ``dynamic=False``
  and option ``dynamic_sizes=False``: every size a constant, as if the program only ever
  saw that shape;
- ``tilefuse_symbolic``: one cold compile at the first length with the sequence dimension
  marked dynamic (``torch._dynamo.mark_dynamic(x, 1)`` on every call's input), then the
  same compiled graph for every other length;
- ``inductor_dynamic``: ``torch.compile(fn, dynamic=True)``, one cold compile reused the
  same way (the reference).

Why ``mark_dynamic`` rather than ``dynamic=True`` for tilefuse: without either, Dynamo's
automatic dynamic shapes compile the first length statically and recompile with symbolic
sizes at the second, so the "symbolic compile" would be a second compile after a static
one. ``mark_dynamic`` on the sequence dimension is what a serving user writes to get one
compile: it makes only that dimension symbolic (the batch and the widths stay constants,
as in the static column, so the comparison isolates the cost of a symbolic sequence
length) and it fails loudly (Dynamo's ConstraintViolationError, recorded as the column's
error) when the model specializes the dimension, where ``dynamic=True`` would silently
specialize it and every other dimension would turn symbolic.

Per (workload, length): each column's median ms (``timing.Timer``), its error against an
fp32 eager reference (bound: 1.5x eager bf16's own error, as in ``bench/models.py``; a
mismatch fails the cell and it gets no time), the static column's compile seconds, and
``ratio`` = symbolic ms / static ms. Per workload: the symbolic column's cold compile
seconds (its first call) and the ``tilefuse.stats()`` counters of its first call and of
all later calls (``graphs_compiled``, ``graphs_compiled_symbolic``, ``symbolic_fallbacks``,
``specializations_compiled``...) proving that it compiled once, and the issue's targets:

- every length's symbolic time within 10% of the static compile's (``ratio <= 1.10``);
- the symbolic cold compile at most 1.5x the static compile at the same (first) length;
- one compile: every graph of the first call symbolic, nothing compiled by later calls.

Prints a table and writes ``<out>/dynamic_<device-slug>_<YYYY-MM-DD>_<HHMM>.json`` after
every cell (atomically). ``--smoke`` runs tiny configs on the CPU (tilefuse through the
Triton interpreter).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench import backends, host_overhead, model_report, models, run, zoo  # noqa: E402
from bench.timing import Timer  # noqa: E402
from bench.workloads import Block  # noqa: E402

SCHEMA_VERSION = 1
SEQ_DIM = 1  # every workload's input is (batch, seq, ...)
DEFAULT_SEQS = (128, 192, 256, 384, 512, 768, 1024)
SMOKE_SEQS = (5, 8, 12)
# Timings per cell (the least of their medians): one H200 host read 0.80 ms and 0.31 ms for
# one compiled block at one length in two runs; its stalls only ever add time.
DEFAULT_REPEATS = 3
COLUMNS = ("eager", "tilefuse_symbolic", "tilefuse_static", "inductor_dynamic")
# Inductor's C++ compile takes minutes on a small CPU: the smoke leaves it out unless asked.
SMOKE_COLUMNS = ("eager", "tilefuse_symbolic", "tilefuse_static")
TILEFUSE_COUNTERS = ("graphs_compiled", "graphs_compiled_symbolic", "symbolic_fallbacks",
                     "specializations_compiled", "graphs_fallen_back", "kernels_compiled",
                     "externs")  # fmt: skip
# The targets (the project's goals, not to be tuned to a run).
MAX_TIME_RATIO = 1.10  # symbolic ms / static ms, at every length
MAX_COMPILE_RATIO = 1.5  # symbolic cold compile / static cold compile, at the first length

_log = run._log


# ---- workloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A module run in bf16 inference over sequence lengths.

    ``make(smoke, max_seq)`` builds the fp32 module (seeded by the caller); ``batch`` and
    ``inputs(seq, device, smoke)`` give the fp32 (or token-id) input of one length;
    ``output`` picks the tensor to check from what the module returns.
    """

    name: str
    description: str
    library: str | None
    make: Callable[[bool, int], nn.Module]
    inputs: Callable[[int, torch.device, bool], torch.Tensor]
    output: Callable[[Any], torch.Tensor]
    shape: Callable[[bool], str]


BLOCK_DIMS = {False: (8, 1024, 16), True: (2, 32, 2)}  # batch, dim, heads


def _block_inputs(seq: int, device: torch.device, smoke: bool) -> torch.Tensor:
    batch, dim, _ = BLOCK_DIMS[smoke]
    gen = torch.Generator().manual_seed(seq)
    return torch.randn(batch, seq, dim, generator=gen).to(device)


def _block_workload() -> Workload:
    def make(smoke: bool, max_seq: int) -> nn.Module:
        _, dim, heads = BLOCK_DIMS[smoke]
        # The causal mask's rows: more than any length asked for. At a length equal to
        # the buffer's, ``mask[:s, :s]`` would leave Dynamo's guard ``s < rows`` and
        # specialize the length (a ConstraintViolationError under mark_dynamic).
        return Block(dim, heads, 2 * max_seq)

    def shape(smoke: bool) -> str:
        batch, dim, heads = BLOCK_DIMS[smoke]
        return f"batch {batch}, dim {dim}, {heads} heads"

    return Workload("block", "pre-norm transformer block (bench/workloads.py Block): "
                    "causal attention in plain ops, GELU MLP", None, make, _block_inputs,
                    lambda out: out, shape)  # fmt: skip


def _zoo_workload(zm: zoo.ZooModel) -> Workload:
    def inputs(seq: int, device: torch.device, smoke: bool) -> torch.Tensor:
        d = zm.dims(smoke)
        gen = torch.Generator().manual_seed(seq)
        return torch.randint(0, d["vocab"], (d["batch"], seq), generator=gen).to(device)

    def shape(smoke: bool) -> str:
        d = zm.dims(smoke)
        return f"batch {d['batch']}, vocab {d['vocab']}"

    return Workload(zm.name, zm.family, zm.library, lambda smoke, _: zm.make(smoke), inputs,
                    zm.output, shape)  # fmt: skip


WORKLOADS = {
    "block": _block_workload(),
    "gpt2": _zoo_workload(zoo.BY_NAME["gpt2"]),
    "llama": _zoo_workload(zoo.BY_NAME["llama"]),
}
DEFAULT_WORKLOADS = ("block", "gpt2")


# ---- columns -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """How one column compiles: ``None`` kwargs for eager; ``per_shape``: a fresh cold
    compile at every length (else one compile reused); ``mark``: mark the sequence
    dimension dynamic on every input."""

    name: str
    family: str
    compile_kwargs: dict[str, Any] | None
    per_shape: bool = False
    mark: bool = False

    def env(self, strict: bool) -> tuple[tuple[str, str], ...]:
        if self.family != "tilefuse":
            return ()
        # The Python wrapper in both tilefuse columns: a symbolic graph has no C++ one, and a
        # static column's background C++ build would swap in while it is timed.
        return (("TILEFUSE_CPP_WRAPPER", "0"), *((("TILEFUSE_STRICT", "1"),) if strict else ()))


BY_NAME = {
    c.name: c
    for c in (
        Column("eager", "eager", None),
        Column("tilefuse_symbolic", "tilefuse", {"backend": "tilefuse"}, mark=True),
        Column(
            "tilefuse_static",
            "tilefuse",
            {"backend": "tilefuse", "dynamic": False, "options": {"dynamic_sizes": False}},
            per_shape=True,
        ),
        Column("inductor_dynamic", "inductor", {"dynamic": True}),
    )
}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return backends.counter_delta(before, after, TILEFUSE_COUNTERS)


def _dynamo_graphs() -> int:
    """Graphs Dynamo has handed to a backend in this process (its recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _unusable(column: Column, device: torch.device) -> str | None:
    spec = backends.BackendSpec(column.name, column.family, column.compile_kwargs)
    return backends.unusable_reason(spec, device)


# ---- one workload ------------------------------------------------------------------------


class _Sweep:
    """The state of one workload's sweep: the bf16 module, per-length inputs, references
    and eager's own error (the scale of every column's bound)."""

    def __init__(
        self, work: Workload, seqs: list[int], timer: Timer, smoke: bool, repeats: int = 1
    ) -> None:
        torch.manual_seed(0)
        self.repeats = repeats
        pristine = work.make(smoke, max(seqs)).to(timer.device).eval()
        self.params = sum(p.numel() for p in pristine.parameters())
        self.module = copy.deepcopy(pristine).to(torch.bfloat16)
        self.work, self.timer, self.smoke = work, timer, smoke
        self.reference: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for seq in seqs:
                out = work.output(pristine(work.inputs(seq, timer.device, smoke)))
                self.reference[seq] = out.detach().float().clone()
        del pristine
        self.eager_error: dict[int, float] = {}
        self.profile_seq: int | None = None  # the length whose calls are also profiled

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return self.work.output(self.module(x))

    def input(self, seq: int, mark: bool) -> torch.Tensor:
        x = self.work.inputs(seq, self.timer.device, self.smoke)
        if x.is_floating_point():
            x = x.to(torch.bfloat16)
        if mark:
            torch._dynamo.mark_dynamic(x, SEQ_DIM)
        return x

    def cell(self, column: Column, seq: int, compiled: Callable[..., Any]) -> dict[str, Any]:
        """Call ``compiled`` at ``seq`` (timing the first call: a compile where one is due),
        check it, and time it when right."""
        cell = _failed(seq, None)
        x = self.input(seq, column.mark)

        def call() -> torch.Tensor:
            with torch.no_grad():
                return compiled(x)

        self.timer.synchronize()
        start = time.perf_counter()
        out = call()
        self.timer.synchronize()
        cell["first_call_s"] = time.perf_counter() - start
        err, where = models.relative_error([out], [self.reference[seq]])
        del out
        cell["rel_error"] = err if err != float("inf") else None
        if column.family == "eager":
            self.eager_error[seq] = err
        limit = models.allowed_error(models.INFER_BF16, self.eager_error.get(seq))
        cell["allowed_error"] = limit
        if limit is None:
            cell["error"] = "no eager result at this length to scale the bf16 tolerance"
        elif not err <= limit:
            cell["error"] = (f"mismatch vs the fp32 reference: {where}: relative L2 error "
                             f"{err:.3g} > {limit:.3g}")  # fmt: skip
        else:
            cell["ms_repeats"] = [self.timer.median_ms(call) for _ in range(self.repeats)]
            cell["ms"] = min(cell["ms_repeats"])
            if self.timer.is_cuda:  # kernels only: host time and launch gaps left out
                cell["kernel_ms"] = models.kernel_ms(call, [], self.timer)
                host_us, _ = host_overhead.host_and_wall_us(call, self.timer.synchronize, "quick")
                cell["host_ms"] = host_us / 1e3  # launching one call, without waiting
            if seq == self.profile_seq:
                cell["profile"] = models.top_kernels(call, [], self.timer)
        return cell


def _failed(seq: int, error: str | None) -> dict[str, Any]:
    """An empty cell at ``seq`` (with ``error`` when it failed or was not run)."""
    return {"seq": seq, "ms": None, "kernel_ms": None, "host_ms": None, "first_call_s": None,
            "rel_error": None, "allowed_error": None, "error": error}  # fmt: skip


def run_column(
    sweep: _Sweep,
    column: Column,
    result: dict[str, Any],
    seqs: list[int],
    strict: bool,
    timeout: float | None,
    over: Callable[[], str | None],
    written: Callable[[], None],
) -> None:
    """Fill ``result`` (``compile_s``, ``cells``...) for ``column``, cell by cell, calling
    ``written()`` after each.

    Never raises for the column's failure: a crash, time limit or mismatch is the cell's
    ``error``. ``over()`` says why no new cell may start (the time budget is spent).
    """
    result.setdefault("cells", [])
    if column.compile_kwargs is None:
        for seq in seqs:
            why = over()
            result["cells"].append(_failed(seq, why) if why else _guarded(
                lambda s=seq: sweep.cell(column, s, sweep.fn), seq, timeout))  # fmt: skip
            written()
        return
    if column.per_shape:
        for seq in seqs:
            why = over()
            if why:
                result["cells"].append(_failed(seq, why))
                continue
            before = backends.tilefuse_stats()
            with backends.cold_caches(column.env(strict)):
                fresh = torch.compile(sweep.fn, **column.compile_kwargs)
                cell = _guarded(lambda s=seq, f=fresh: sweep.cell(column, s, f), seq, timeout)
            cell["compile_s"] = cell["first_call_s"]
            if column.family == "tilefuse":
                cell["tilefuse"] = _delta(before, backends.tilefuse_stats())
            result["cells"].append(cell)
            sweep.timer.free_memory()
            written()
        return
    before, graphs_before = backends.tilefuse_stats(), _dynamo_graphs()
    with backends.cold_caches(column.env(strict)):
        compiled = torch.compile(sweep.fn, **column.compile_kwargs)
        for i, seq in enumerate(seqs):
            why = over()
            if why:
                result["cells"].append(_failed(seq, why))
                continue
            cell = _guarded(lambda s=seq: sweep.cell(column, s, compiled), seq, timeout)
            result["cells"].append(cell)
            if i == 0:
                result["compile_s"] = cell["first_call_s"]
                result["compile_seq"] = seq
                if column.family == "tilefuse":
                    result["tilefuse_first_call"] = _delta(before, backends.tilefuse_stats())
            written()
        result["dynamo_graphs"] = _dynamo_graphs() - graphs_before
        if column.family == "tilefuse":
            total = _delta(before, backends.tilefuse_stats())
            first = result.get("tilefuse_first_call", {})
            result["tilefuse_later_calls"] = {k: total[k] - first.get(k, 0) for k in total}
    sweep.timer.free_memory()
    written()


def _guarded(measure: Callable[[], dict[str, Any]], seq: int, timeout: float | None) -> dict:
    try:
        with models.time_limit(timeout):
            return measure()
    except Exception as exc:  # a column's failure is a result, not the end of the run
        return _failed(seq, run._error_text(exc))


# ---- targets -----------------------------------------------------------------------------


def _by_seq(result: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    return {c["seq"]: c for c in (result or {}).get("cells", [])}


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """Fill ``row["shapes"]`` (one line per length, each column's ms, ``ratio``) and
    ``row["targets"]`` / ``row["verdict"]`` from ``row["results"]``; returns ``row``."""
    results = row.get("results", {})
    cells = {name: _by_seq(r) for name, r in results.items()}
    shapes = []
    for seq in row.get("seqs", []):
        line: dict[str, Any] = {"seq": seq}
        for name in results:
            line[f"{name}_ms"] = cells[name].get(seq, {}).get("ms")
            line[f"{name}_kernel_ms"] = cells[name].get(seq, {}).get("kernel_ms")
            line[f"{name}_host_ms"] = cells[name].get(seq, {}).get("host_ms")
        static = cells.get("tilefuse_static", {}).get(seq, {})
        line["tilefuse_static_compile_s"] = static.get("compile_s")
        sym, stat = line.get("tilefuse_symbolic_ms"), line.get("tilefuse_static_ms")
        line["ratio"] = sym / stat if sym and stat else None
        for what in ("kernel", "host"):
            sym = line.get(f"tilefuse_symbolic_{what}_ms")
            stat = line.get(f"tilefuse_static_{what}_ms")
            line[f"{what}_ratio"] = sym / stat if sym and stat else None
        shapes.append(line)
    row["shapes"] = shapes
    row["targets"] = targets(row)
    problems = [t for t in row["targets"] if t["ok"] is False]
    unknown = [t for t in row["targets"] if t["ok"] is None]
    if row.get("error"):
        row["verdict"] = {"status": "-", "reason": row["error"].splitlines()[0][:200]}
    elif problems:
        row["verdict"] = {"status": "MISS", "reason": "; ".join(t["detail"] for t in problems)}
    elif unknown:
        row["verdict"] = {"status": "-", "reason": "; ".join(t["detail"] for t in unknown)}
    else:
        row["verdict"] = {"status": "PASS", "reason": ""}
    return row


def targets(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets for one workload's row; ``ok`` is ``None`` where a figure
    is missing (a column not run, errored or mismatched)."""
    results = row.get("results", {})
    sym, static = results.get("tilefuse_symbolic"), results.get("tilefuse_static")
    out = []
    ratios = [(s["seq"], s["ratio"]) for s in row.get("shapes", [])]
    missing = [seq for seq, r in ratios if r is None]
    slow = [(seq, r) for seq, r in ratios if r is not None and r > MAX_TIME_RATIO]
    worst = max((r for _, r in ratios if r is not None), default=None)
    if slow:
        ok, detail = False, "slower than static by more than 10% at " + ", ".join(
            f"{seq} ({r:.2f}x)" for seq, r in slow)  # fmt: skip
    elif missing or not ratios:
        where = ", ".join(map(str, missing)) or "any length"
        ok, detail = None, f"no symbolic/static ratio at {where}"
    else:
        ok, detail = True, f"worst {worst:.2f}x"
    out.append({"target": f"symbolic ms <= {MAX_TIME_RATIO:.2f} x static ms at every length",
                "ok": ok, "detail": detail, "worst_ratio": worst})  # fmt: skip

    first = (sym or {}).get("compile_seq")
    sym_s = (sym or {}).get("compile_s")
    static_s = _by_seq(static).get(first, {}).get("compile_s") if first is not None else None
    ok_compile = sym_s is not None and (sym or {}).get("cells", [{}])[0].get("error") is None
    if not ok_compile or static_s is None:
        ok, detail, ratio = None, "no cold compile to compare at the first length", None
    else:
        ratio = sym_s / static_s
        ok = ratio <= MAX_COMPILE_RATIO
        detail = f"cold compile {sym_s:.2f} s vs static {static_s:.2f} s at {first}: {ratio:.2f}x"
    out.append({"target": f"symbolic cold compile <= {MAX_COMPILE_RATIO} x static's",
                "ok": ok, "detail": detail, "ratio": ratio})  # fmt: skip

    first_call = (sym or {}).get("tilefuse_first_call")
    later = (sym or {}).get("tilefuse_later_calls")
    if not first_call or later is None:
        ok, detail = None, "no tilefuse counters for the symbolic column"
    else:
        graphs, symbolic = first_call["graphs_compiled"], first_call["graphs_compiled_symbolic"]
        again = later["graphs_compiled"] + later["specializations_compiled"]
        fallbacks = first_call["symbolic_fallbacks"] + later["symbolic_fallbacks"]
        ok = graphs > 0 and symbolic == graphs and again == 0 and fallbacks == 0
        detail = (f"first call: {graphs} graph(s), {symbolic} symbolic; later calls compiled "
                  f"{again}; symbolic_fallbacks {fallbacks}")  # fmt: skip
    out.append({"target": "symbolic column compiled once", "ok": ok, "detail": detail})
    return out


# ---- the run -----------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(v) for v in run._csv(text)]
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: integers >= 2, comma-separated (Dynamo specializes sizes 0 and 1)"
        )
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", type=run._csv, default=None, metavar="W[,W]",
                   help=f"any of {','.join(WORKLOADS)} (default {','.join(DEFAULT_WORKLOADS)}; "
                   "smoke: block)")  # fmt: skip
    p.add_argument("--seqs", type=_ints, default=None, metavar="N[,N]",
                   help="sequence lengths, the first one compiles the symbolic graph (default "
                   f"{','.join(map(str, DEFAULT_SEQS))}; smoke "
                   f"{','.join(map(str, SMOKE_SEQS))})")  # fmt: skip
    p.add_argument("--columns", type=run._csv, default=None, metavar="C[,C]",
                   help=f"any of {','.join(COLUMNS)} (default: all; smoke: "
                   f"{','.join(SMOKE_COLUMNS)}); eager always runs")  # fmt: skip
    p.add_argument("--profile", type=int, default=None, metavar="SEQ",
                   help="also profile every column at length SEQ (one of --seqs) and print "
                   "their top kernels side by side")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny configs (the CPU without a GPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out", type=Path, default=run.DEFAULT_OUT, help="directory for the JSON")
    p.add_argument("--full-timing", action="store_true", help="do_bench's full budget "
                   "(default: the quick one, 25 ms warmup + 100 ms)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="time each cell N times and keep the least median (default 3; "
                   "smoke 1): a slow host's stalls only ever add time")  # fmt: skip
    p.add_argument("--allow-fallback", action="store_true",
                   help="do not set TILEFUSE_STRICT=1 for the tilefuse columns")  # fmt: skip
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="limit for one column at one length, compile included")  # fmt: skip
    p.add_argument("--max-total-s", type=float, default=540.0, metavar="S",
                   help="start no new cell after S seconds; the rest are recorded as not run "
                   "(default 540, under a 10-minute command limit)")  # fmt: skip
    args = p.parse_args(argv)
    if args.workloads is None:
        args.workloads = ["block"] if args.smoke else list(DEFAULT_WORKLOADS)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    if args.seqs is None:
        args.seqs = list(SMOKE_SEQS if args.smoke else DEFAULT_SEQS)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else DEFAULT_REPEATS
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.columns is None:
        args.columns = list(SMOKE_COLUMNS if args.smoke else COLUMNS)
    unknown = [c for c in args.columns if c not in BY_NAME]
    if unknown:
        p.error(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    args.columns = ["eager", *(c for c in COLUMNS if c in args.columns and c != "eager")]
    return args


def run_all(args: argparse.Namespace, path_out: list[Path] | None = None) -> dict[str, Any]:
    """Every workload under every column; the JSON-ready dict, written after every cell."""
    started = time.monotonic()
    device = run.pick_device(args.device, args.smoke)
    if args.smoke and device.type == "cpu":
        timer: Timer = models.SmokeTimer(device, quick=True)
    else:
        timer = Timer(device, quick=not args.full_timing)
    columns = [BY_NAME[c] for c in args.columns]
    unusable = {c.name: _unusable(c, device) for c in columns}
    created = dt.datetime.now().astimezone()
    machine = run.machine_info(device)
    _log(f"device: {device} ({machine['device']})")
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": created.isoformat(timespec="seconds"),
        "machine": machine,
        "mode": {"smoke": args.smoke, "workloads": args.workloads, "seqs": args.seqs,
                 "columns": args.columns, "dtype": "bfloat16", "seq_dim": SEQ_DIM,
                 "timing": timer.method + ("" if args.full_timing or args.smoke else " (quick)")
                           + (f", least of {args.repeats}" if args.repeats > 1 else ""),
                 "tilefuse_strict": not args.allow_fallback, "timeout_s": args.timeout,
                 "profile": args.profile},
        "columns": {c.name: {"family": c.family, "compile": _describe(c),
                             "usable": unusable[c.name] is None, "reason": unusable[c.name]}
                    for c in columns},
        "targets": {"max_time_ratio": MAX_TIME_RATIO, "max_compile_ratio": MAX_COMPILE_RATIO},
        "rows": [],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = run.output_path(args.out, f"dynamic {machine['device']}", created)
    if path_out is not None:
        path_out.append(path)

    def over() -> str | None:
        return run.over_budget(started, args.max_total_s)

    warm_up(columns, unusable, timer, not args.allow_fallback)
    for name in args.workloads:
        work = WORKLOADS[name]
        row: dict[str, Any] = {"workload": name, "description": work.description,
                               "shape": work.shape(args.smoke), "seqs": args.seqs,
                               "results": {}, "error": None}  # fmt: skip
        data["rows"].append(row)
        why = over() or (work.library and zoo.library_missing(
            zoo.BY_NAME[name]))  # fmt: skip
        sweep = None
        if not why:
            try:
                sweep = _Sweep(work, args.seqs, timer, args.smoke, args.repeats)
                sweep.profile_seq = args.profile
                row["params"] = sweep.params
            except Exception as exc:
                why = f"building the model or its fp32 reference failed: {run._error_text(exc)}"
        if sweep is None:
            row["error"] = why
            summarize(row)
            run.write_json(path, data)
            continue
        for column in columns:
            if unusable[column.name]:
                row["results"][column.name] = {"skipped": unusable[column.name], "cells": []}
                continue
            _log(f"{name} / {column.name} ...")

            def written(row: dict[str, Any] = row) -> None:
                summarize(row)
                run.write_json(path, data)

            result: dict[str, Any] = {"compile_s": None, "cells": []}
            row["results"][column.name] = result
            run_column(sweep, column, result, args.seqs, not args.allow_fallback, args.timeout,
                       over, written)  # fmt: skip
            for cell in row["results"][column.name]["cells"]:
                _log(f"  seq {cell['seq']}: {_cell_text(cell)}")
        del sweep
        timer.free_memory()
        summarize(row)
        run.write_json(path, data)
    data["elapsed_s"] = time.monotonic() - started
    run.write_json(path, data)
    return data


def _cell_text(cell: dict[str, Any]) -> str:
    ms = "-" if cell["ms"] is None else f"{cell['ms']:.3f} ms"
    text = f"{ms}, first call {cell['first_call_s'] or 0:.2f} s"
    if cell["error"]:
        text += f"; error: {cell['error'].splitlines()[0][:160]}"
    return text


def warm_up(
    columns: list[Column], unusable: dict[str, str | None], timer: Timer, strict: bool
) -> None:
    """Compile a trivial function once per compiled column, the way that column compiles
    (marked dynamic or not), so that one-time process costs (imports, plugin loading,
    Inductor's workers, Dynamo's first symbolic trace, the GEMM template selector) are
    charged to no column."""

    def tiny(t: torch.Tensor) -> torch.Tensor:
        return torch.relu(t @ t.transpose(-1, -2) * 2 + 1).sum(-1)

    for column in columns:
        if column.compile_kwargs is None or unusable.get(column.name):
            continue
        x = torch.ones(4, 8, 16, device=timer.device)
        if column.mark:
            torch._dynamo.mark_dynamic(x, SEQ_DIM)
        try:
            with backends.cold_caches(column.env(strict)):
                torch.compile(tiny, **column.compile_kwargs)(x)
                timer.synchronize()
        except Exception as exc:  # the column's own cells will say what is wrong
            _log(f"warm-up of {column.name} failed: {run._error_text(exc)[:200]}")


def _describe(column: Column) -> str:
    if column.compile_kwargs is None:
        return "eager"
    kw = ", ".join(f"{k}={v!r}" for k, v in column.compile_kwargs.items())
    how = "fresh cold compile per length" if column.per_shape else "one cold compile, reused"
    mark = f"; mark_dynamic(x, {SEQ_DIM}) on every input" if column.mark else ""
    return f"torch.compile(fn, {kw}): {how}{mark}"


# ---- the report --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(data: dict[str, Any]) -> str:
    columns = list(data["columns"])
    heads = {"eager": "eager", "tilefuse_static": "static (compile s)",
             "tilefuse_symbolic": "symbolic", "inductor_dynamic": "inductor dyn"}  # fmt: skip
    head = f"{'workload':10s}{'seq':>6s}" + "".join(f"{heads[c]:>20s}" for c in columns)
    head += f"{'sym/static':>12s}{'kernels s/s':>13s}{'host s/s':>10s}"
    lines = [f"ms per call, bf16 inference ({data['mode']['timing']}); kernels s/s: the "
             "same ratio of summed kernel time (torch.profiler; no host time); host s/s: of "
             "the host time to launch one call (no waiting)", head, "-" * len(head)]  # fmt: skip
    notes = []
    for row in data["rows"]:
        if row.get("error") and not row["results"]:
            lines.append(f"{row['workload']:10s} error: {row['error'].splitlines()[0][:100]}")
            continue
        for line in row.get("shapes", []):
            cells = []
            for c in columns:
                text = _ms(line.get(f"{c}_ms"))
                if c == "tilefuse_static" and line.get("tilefuse_static_compile_s") is not None:
                    text += f" ({line['tilefuse_static_compile_s']:.1f})"
                cells.append(f"{text:>20s}")
            ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}x"
            device, host = line.get("kernel_ratio"), line.get("host_ratio")
            device_text = "-" if device is None else f"{device:.2f}x"
            host_text = "-" if host is None else f"{host:.2f}x"
            lines.append(f"{row['workload']:10s}{line['seq']:>6d}" + "".join(cells)
                         + f"{ratio:>12s}{device_text:>13s}{host_text:>10s}")  # fmt: skip
        sym = row["results"].get("tilefuse_symbolic") or {}
        ind = row["results"].get("inductor_dynamic") or {}
        compile_note = f"  symbolic cold compile {_s(sym.get('compile_s'))}"
        if ind.get("compile_s") is not None:
            compile_note += f"; inductor dynamic {_s(ind.get('compile_s'))}"
        lines.append(compile_note)
        for t in row.get("targets", []):
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["ok"]]
            lines.append(f"  {t['target']}: {verdict} ({t['detail']})")
        lines.append(f"  verdict: {row['verdict']['status']}")
        for name, r in row["results"].items():
            for cell in r.get("cells", []):
                if cell.get("error"):
                    notes.append(f"  {row['workload']} / {name} / {cell['seq']}: "
                                 f"{cell['error'].splitlines()[0][:160]}")  # fmt: skip
            if r.get("skipped"):
                notes.append(f"  {row['workload']} / {name} skipped: {r['skipped']}")
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def format_profiles(data: dict[str, Any]) -> str:
    """The top kernels of each column at the profiled length, side by side per workload
    (``model_report.format_profiles``'s layout)."""
    rows = []
    for row in data["rows"]:
        profiles = {name: {"profile": cell["profile"]}
                    for name, r in row["results"].items()
                    for cell in r.get("cells", []) if cell.get("profile")}  # fmt: skip
        if profiles:
            seq = data["mode"].get("profile")
            rows.append({"model": row["workload"], "mode": f"seq {seq}", "results": profiles})
    return model_report.format_profiles({"rows": rows})


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths: list[Path] = []
    data = run_all(args, paths)
    print(format_table(data))
    if args.profile is not None:
        print("\n" + format_profiles(data))
    print(f"\nwrote {paths[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
