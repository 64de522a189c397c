"""The model benchmark: ``python bench/models.py [--models a,b] [--modes ...] [--profile MODEL]``.

For every zoo model (``bench/zoo.py``) and mode (bf16 inference, an fp32 training step, a
training step under bf16 autocast), and every backend (eager, Inductor, tilefuse), in this
one process: the result's error against an fp32 eager reference, median ms, cold-cache compile
seconds, device kernels per iteration and, for tilefuse, the graphs it compiled and fell back
on. A failure (a missing library, a crash, a mismatch, a time limit) is recorded in its row
and the run goes on. Prints a table with the geometric-mean speedup over eager per backend
and writes ``<out>/models_<device-slug>_<YYYY-MM-DD>_<HHMM>.json`` after every row.
``--smoke`` runs tiny configs (on the CPU through the Triton interpreter where there is no GPU).
``--cudagraphs`` adds the columns ``inductor_cg`` and ``tilefuse_cg``: both compilers under
``mode="reduce-overhead"`` (CUDA graphs), checked and timed from their third call on (the
first warms up, the second captures; both count in their compile seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import re
import signal
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
from torch import nn  # noqa: E402

from bench import backends, model_report, run, zoo  # noqa: E402
from bench.backends import BackendSpec  # noqa: E402
from bench.timing import Timer  # noqa: E402

SCHEMA_VERSION = 1
INFER_BF16, TRAIN_FP32, TRAIN_AMP = "infer-bf16", "train-fp32", "train-amp"
MODES = (INFER_BF16, TRAIN_FP32, TRAIN_AMP)
KIND = "model"  # the workload kind handed to BackendSpec.runs_on: plain eager/inductor/tilefuse
# train-fp32: every output (the loss and each gradient) within this relative L2 error of the
# fp32 reference. bf16 modes: at most BF16_FACTOR x eager's own error in that mode.
FP32_REL_ERROR = 1e-3
BF16_FACTOR = 1.5
# Outputs whose reference norm is below this share of the largest one (e.g. the gradient of a
# parameter the loss barely reaches) are left out of the error: their relative error is noise.
NEGLIGIBLE_NORM = 1e-6
TILEFUSE_COUNTERS = ("graphs_compiled", "graphs_fallen_back", "kernels_compiled", "externs",
                     "cuda_graphs_captured", "cuda_graph_fallbacks", "cpp_wrappers",
                     "cpp_wrapper_fallbacks")  # fmt: skip
# Inductor's C++ compile of every graph takes minutes on a small CPU: the smoke leaves it out
# unless --backends asks for it.
SMOKE_BACKENDS = ("eager", "tilefuse")
# A shared host's load changes within seconds (the same model has read 1.6 ms and 2.9 ms
# under one compiler in two runs an hour apart): each backend is timed in this many rounds,
# interleaved, and its ms is their median.
DEFAULT_ROUNDS = 3
PROFILE_TOP = 20
PROFILE_CALLS = 3


_log = run._log  # one copy of the progress logger and the comma-list parser, in run.py
_csv = run._csv


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv, default=[], metavar="M[,M]", help="default: all")
    p.add_argument(
        "--modes",
        type=_csv,
        default=[INFER_BF16],
        metavar="MODE[,MODE]",
        help=f"any of {','.join(MODES)} (default: {INFER_BF16})",
    )
    p.add_argument(
        "--backends",
        type=_csv,
        default=None,
        metavar="B[,B]",
        help="any of eager,inductor,tilefuse (default: all; with --smoke: eager,tilefuse)",
    )
    p.add_argument("--profile", metavar="MODEL", help="run MODEL only and print each "
                   "backend's top kernels side by side")  # fmt: skip
    p.add_argument(
        "--profile-top",
        type=int,
        default=PROFILE_TOP,
        metavar="N",
        help=f"how many kernels --profile lists per backend (default {PROFILE_TOP})",
    )
    p.add_argument("--smoke", action="store_true", help="tiny configs (the CPU without a GPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out", type=Path, default=run.DEFAULT_OUT, help="directory for the JSON")
    p.add_argument("--full-timing", action="store_true", help="do_bench's full budget "
                   "(default: the quick one, 25 ms warmup + 100 ms)")  # fmt: skip
    p.add_argument(
        "--allow-fallback",
        action="store_true",
        help="do not set TILEFUSE_STRICT=1 "
        "(graphs tilefuse cannot compile run eagerly; graphs_fallen_back says so)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="limit for one backend on one (model, mode), compile included",
    )
    p.add_argument(
        "--max-total-s",
        type=float,
        default=540.0,
        metavar="S",
        help="start no new (model, mode) row after S seconds; the rest are "
        "recorded as not run (default 540, under a 10-minute command limit)",
    )
    p.add_argument(
        "--cudagraphs",
        action="store_true",
        help="add the columns inductor_cg and tilefuse_cg: mode='reduce-overhead' (CUDA "
        "graphs) of each compiler chosen by --backends",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help=f"timing rounds per row, interleaved across backends; ms is their median "
        f"(default: {DEFAULT_ROUNDS}, with --smoke 1)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="batch size of every model (default: each model's own; 1 for batch-1 serving; "
        "a batch norm's training step needs more than one value per channel, in eager too)",
    )
    p.add_argument("--list", action="store_true", help="list the models and exit")
    args = p.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be at least 1")
    if args.backends is None:
        args.backends = list(SMOKE_BACKENDS if args.smoke else backends.FAMILIES)
    if args.rounds is None:
        args.rounds = 1 if args.smoke else DEFAULT_ROUNDS
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    if args.profile:
        args.models = [args.profile]
    if args.profile_top < 1:
        p.error("--profile-top must be at least 1")
    if args.profile_top != PROFILE_TOP and not args.profile:
        p.error("--profile-top needs --profile MODEL")
    if any(m != TRAIN_FP32 for m in args.modes) and args.backends[:1] != ["eager"]:
        # A bf16 mode's error bound is a multiple of eager's own error in that mode: eager
        # runs first.
        if "eager" not in args.backends:
            _log("note: eager added to --backends: the bf16 modes' error bound scales its error")
        args.backends = ["eager", *(b for b in args.backends if b != "eager")]
    return args


class BackendTimeout(Exception):
    """One backend ran past ``--timeout`` on one (model, mode)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``BackendTimeout`` in the main thread after ``seconds`` (no limit when ``None``,
    not positive, or off the main thread, where signals cannot be delivered)."""
    import threading

    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise BackendTimeout(f"ran past the {seconds:.0f} s limit (--timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class SmokeTimer(Timer):
    """The CPU smoke's timer: one timed call after the compiling one (through the Triton
    interpreter a call takes seconds; the smoke checks the harness, not speed)."""

    def median_ms(
        self, fn: Callable[[], Any], grad_to_none: Sequence[torch.Tensor] | None = None
    ) -> float:
        for leaf in grad_to_none or ():
            leaf.grad = None
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    @property
    def method(self) -> str:
        return "time.perf_counter, one call (smoke)"


# ---- one (model, mode): the step each backend runs ---------------------------------------


@dataclass
class Prepared:
    """A model copy set up for one mode: ``fn`` is what a backend compiles, ``step(fn)`` one
    zero-argument iteration returning the outputs to check, ``leaves`` the grads to reset."""

    module: nn.Module
    fn: Callable[..., Any]
    step: Callable[[Callable[..., Any]], Callable[[], list[torch.Tensor | None]]]
    leaves: list[torch.Tensor]


def prepare(
    zm: zoo.ZooModel,
    pristine: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    mode: str,
    reference: bool = False,
) -> Prepared:
    """A fresh copy of ``pristine`` for ``mode``; ``reference``: the fp32 eager version of it
    (what every backend's result is compared with)."""
    module = copy.deepcopy(pristine)
    if mode == INFER_BF16:
        module.eval()
        if not reference:
            module.to(torch.bfloat16)
            if x.is_floating_point():
                x = x.to(torch.bfloat16)

        def forward(inp: torch.Tensor) -> torch.Tensor:
            return zm.output(module(inp))

        def infer_step(fn: Callable[..., Any]) -> Callable[[], list[torch.Tensor | None]]:
            def call() -> list[torch.Tensor | None]:
                with torch.no_grad():
                    return [fn(x)]

            return call

        return Prepared(module, forward, infer_step, [])

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    amp = mode == TRAIN_AMP and not reference

    def loss_fn(inp: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        ctx = torch.autocast(inp.device.type, dtype=torch.bfloat16) if amp else None
        with ctx or contextlib.nullcontext():
            return zm.loss(zm.output(module(inp)), target)

    def train_step(fn: Callable[..., Any]) -> Callable[[], list[torch.Tensor | None]]:
        def call() -> list[torch.Tensor | None]:
            loss = fn(x, y)
            loss.backward()
            return [loss.detach(), *(p.grad for p in params)]

        return call

    return Prepared(module, loss_fn, train_step, params)


def relative_error(
    outputs: list[torch.Tensor | None], reference: list[torch.Tensor | None]
) -> tuple[float, str]:
    """The largest relative L2 error over ``outputs`` against ``reference`` (in float64), and
    which output it was (``"output 0"`` is the result or loss, ``"output i"`` gradient i-1).

    Outputs whose reference norm is negligible next to the largest are skipped, and so is
    a ``None`` gradient against an all-zero one: a compiled graph that returns an output
    the loss does not use (BERT's pooler, across a graph break) gets a zero gradient for
    the parameters behind it where eager leaves ``None``. A shape mismatch, any other
    ``None`` on one side only, or non-finite values give ``inf``.
    """
    if len(outputs) != len(reference):
        return math.inf, f"{len(outputs)} outputs, the reference has {len(reference)}"
    norms = [0.0 if e is None else e.detach().double().norm().item() for e in reference]
    floor = NEGLIGIBLE_NORM * max(norms, default=0.0)
    worst, where = 0.0, "none"
    for i, (a, e) in enumerate(zip(outputs, reference)):
        if a is None or e is None:
            other = a if e is None else e
            if other is not None and bool(other.detach().count_nonzero()):
                return math.inf, f"output {i}: None on one side only"
            continue
        if a.shape != e.shape:
            return math.inf, f"output {i}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        diff = (a.detach().double() - e.detach().double()).norm().item()
        if not math.isfinite(diff):
            return math.inf, f"output {i}: non-finite values"
        if norms[i] <= floor:
            continue
        err = diff / norms[i]
        if err > worst:
            worst, where = err, f"output {i}"
    return worst, where


def allowed_error(mode: str, eager_error: float | None) -> float | None:
    """The largest error a backend may have in ``mode``; ``None`` when the bf16 modes have no
    eager error to scale."""
    if mode == TRAIN_FP32:
        return FP32_REL_ERROR
    if eager_error is None:
        return None
    return max(BF16_FACTOR * eager_error, FP32_REL_ERROR)


def _tilefuse_counters() -> dict[str, int]:
    try:
        import tilefuse
    except ImportError:
        return {}
    return tilefuse.stats()


def _clear(leaves: list[torch.Tensor]) -> None:
    for leaf in leaves:
        leaf.grad = None


def _profiled_kernels(
    step: Callable[[], Any], leaves: list[torch.Tensor], timer: Timer
) -> tuple[list[Any], Callable[[Any], float]]:
    """``(events, cost)``: the profiler's per-kernel averages over ``PROFILE_CALLS`` calls
    of ``step`` (device kernels on a GPU; CPU ops on the CPU) and each one's total cost
    in us over those calls."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if timer.is_cuda:
        activities.append(ProfilerActivity.CUDA)
    _clear(leaves)
    step()
    timer.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(PROFILE_CALLS):
            _clear(leaves)
            step()
        timer.synchronize()

    def cost(e: Any) -> float:
        if timer.is_cuda:
            return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)
        return getattr(e, "self_cpu_time_total", 0.0)

    events = [e for e in prof.key_averages() if cost(e) > 0]
    if timer.is_cuda:  # the kernels themselves, not the CPU-side ops that launched them
        from torch.autograd import DeviceType

        events = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
    return events, cost


def top_kernels(
    step: Callable[[], Any], leaves: list[torch.Tensor], timer: Timer, count: int = PROFILE_TOP
) -> list[dict[str, Any]]:
    """The ``count`` costliest kernels of one iteration (device time; CPU time on the
    CPU), averaged over ``PROFILE_CALLS`` profiled calls."""
    return profile_kernels(step, leaves, timer, count)[0]


def profile_kernels(
    step: Callable[[], Any], leaves: list[torch.Tensor], timer: Timer, count: int = PROFILE_TOP
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """``(top, families)`` of one profiled pass: ``top_kernels``'s list, and every kernel's
    time and calls per iteration summed by ``KERNEL_FAMILIES`` (plus ``"all"``)."""
    events, cost = _profiled_kernels(step, leaves, timer)
    events.sort(key=cost, reverse=True)
    entries = [
        {"name": e.key, "ms": cost(e) / 1e3 / PROFILE_CALLS, "calls": e.count / PROFILE_CALLS}
        for e in events
    ]
    families: dict[str, dict[str, float]] = {}
    for entry in entries:
        for family in (kernel_family(entry["name"]), "all"):
            total = families.setdefault(family, {"ms": 0.0, "calls": 0.0})
            total["ms"] += entry["ms"]
            total["calls"] += entry["calls"]
    return entries[:count], families


#: Kernel families of a profile's summary, by name (the first pattern that matches).
KERNEL_FAMILIES = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("convolution", re.compile(r"cudnn|conv|fprop|dgrad|wgrad|nchwToNhwc|nhwcToNchw", re.I)),
    ("gemm", re.compile(r"gemm|xmma|cutlass|nvjet|cublas|splitK|matmul", re.I)),
    ("generated", re.compile(r"^(tf_|triton_)")),
    ("memset/copy", re.compile(r"^Mem(set|cpy)")),
    ("aten", re.compile(r"at::|at_cuda_detail|cub::")),
)


def kernel_family(name: str) -> str:
    """``name``'s family in ``KERNEL_FAMILIES``, else ``"other"``."""
    return next((family for family, pattern in KERNEL_FAMILIES if pattern.search(name)), "other")


def kernel_ms(step: Callable[[], Any], leaves: list[torch.Tensor], timer: Timer) -> float:
    """Device time of one iteration: every kernel's time summed (no launch gaps, no host
    time), averaged over ``PROFILE_CALLS`` profiled calls; on the CPU, CPU op time."""
    events, cost = _profiled_kernels(step, leaves, timer)
    return sum(cost(e) for e in events) / 1e3 / PROFILE_CALLS


def measure(
    zm: zoo.ZooModel,
    pristine: nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor | None],
    mode: str,
    spec: BackendSpec,
    timer: Timer,
    reference: list[torch.Tensor | None],
    eager_error: float | None,
    timeout: float | None,
    profile: int = 0,
    keep: list[tuple[str, Prepared, Callable[[], Any]]] | None = None,
) -> dict[str, Any]:
    """Compile (cold caches), check against the fp32 ``reference``, time, count kernels.

    Never raises for the backend's failure: its text goes in the result's ``error``.
    ``eager_error`` is eager's own error in this mode (the scale for the bf16 modes).
    ``profile`` > 0 also records that many of the costliest kernels (``top_kernels``).
    With ``keep``, a backend that was timed appends ``(spec.name, prepared, step)`` to it
    for more timing rounds, and the caller frees it.
    """
    result: dict[str, Any] = {"ms": None, "compile_s": None, "kernels": None, "error": None}
    result["rel_error"] = None
    ctx = backends.cold_caches(spec.env) if spec.compiles else contextlib.nullcontext()
    before = _tilefuse_counters() if spec.family == "tilefuse" else {}
    prepared = None
    try:
        with time_limit(timeout), ctx:
            prepared = prepare(zm, pristine, *inputs, mode)
            step = prepared.step(spec.prepare(prepared.fn))
            timer.synchronize()
            start = time.perf_counter()
            outputs = step()
            if spec.cuda_graphs:  # the first call warmed up; the second captures
                outputs = None
                _clear(prepared.leaves)
                outputs = step()
            timer.synchronize()
            if spec.compiles:
                result["compile_s"] = time.perf_counter() - start
            if spec.family == "tilefuse":
                # The C++ wrappers it builds in the background (the default on CUDA) load
                # before the outputs are checked and the steps timed: both are the steady
                # state's. The wait is reported apart from the compile.
                start = time.perf_counter()
                backends.wait_for_tilefuse_builds()
                result["background_s"] = time.perf_counter() - start
                if not spec.cuda_graphs:  # the calls below check a replay
                    outputs = None
                    _clear(prepared.leaves)
                    outputs = step()
            if spec.cuda_graphs:  # a replay's outputs are the ones checked
                outputs = None
                _clear(prepared.leaves)
                outputs = step()
            err, where = relative_error(outputs, reference)
            del outputs
            result["rel_error"] = err if math.isfinite(err) else None
            limit = err if spec.family == "eager" and mode != TRAIN_FP32 else None
            limit = limit if limit is not None else allowed_error(mode, eager_error)
            result["allowed_error"] = limit
            if limit is None:
                result["error"] = "no eager result in this mode to scale the bf16 tolerance"
            elif not err <= limit:
                result["error"] = (
                    f"mismatch vs the fp32 reference: {where}: relative L2 error "
                    f"{err:.3g} > {limit:.3g}"
                )
            else:
                result["ms"] = timer.median_ms(step, prepared.leaves)
                result["kernels"] = timer.count_kernels(step, prepared.leaves)
                if profile:
                    result["profile"], result["profile_families"] = profile_kernels(
                        step, prepared.leaves, timer, profile
                    )
                if keep is not None:
                    keep.append((spec.name, prepared, step))
                    prepared = None
    except Exception as exc:  # a backend's failure is a result, not the end of the run
        result["error"] = run._error_text(exc)
        result["ms"] = None
    finally:
        if spec.family == "tilefuse":
            after = _tilefuse_counters()
            result["tilefuse"] = {k: after.get(k, 0) - before.get(k, 0) for k in TILEFUSE_COUNTERS}
        if prepared is not None:
            _clear(prepared.leaves)
        del prepared
        timer.free_memory()
    return result


def reference_outputs(
    zm: zoo.ZooModel,
    pristine: nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor | None],
    mode: str,
) -> list[torch.Tensor | None]:
    """fp32 eager outputs (the result, or the loss and every gradient), detached clones."""
    ref = prepare(zm, pristine, *inputs, mode, reference=True)
    outputs = ref.step(ref.fn)()
    return [None if o is None else o.detach().clone() for o in outputs]


def run_row(
    zm: zoo.ZooModel,
    mode: str,
    columns: list[BackendSpec],
    unusable: dict[str, str | None],
    timer: Timer,
    smoke: bool,
    timeout: float | None,
    profile: int = 0,
    rounds: int = 1,
) -> dict[str, Any]:
    """Every backend on one (model, mode), as its JSON row; ``rounds`` timing rounds each
    (``_more_rounds``)."""
    row: dict[str, Any] = {
        "model": zm.name,
        "mode": mode,
        "family": zm.family,
        "library": zm.library,
        "shape": zm.shape(smoke),
        "results": {},
        "error": None,
    }
    missing = zoo.library_missing(zm)
    if missing:
        row["error"] = missing
        return model_report.summarize(row)
    try:
        torch.manual_seed(0)
        pristine = zm.make(smoke).to(timer.device)
        inputs = zm.inputs(timer.device, smoke)
        reference = reference_outputs(zm, pristine, inputs, mode)
    except Exception as exc:
        row["error"] = f"building the model or its fp32 reference failed: {run._error_text(exc)}"
        timer.free_memory()
        return model_report.summarize(row)
    row["params"] = sum(p.numel() for p in pristine.parameters())
    eager_error = None
    timed: list[tuple[str, Prepared, Callable[[], Any]]] = []
    for spec in columns:
        if not spec.runs_on(KIND):
            continue
        if unusable.get(spec.name):
            row["results"][spec.name] = {"ms": None, "error": None, "skipped": unusable[spec.name]}
            continue
        _log(f"  {zm.name} / {mode} / {spec.name} ...")
        r = measure(zm, pristine, inputs, mode, spec, timer, reference, eager_error, timeout,
                    profile, timed)  # fmt: skip
        if spec.family == "eager" and r["error"] is None:
            eager_error = r["rel_error"]
        if r["ms"] is None:
            _log(f"    error: {(r['error'] or '').splitlines()[0][:200]}")
        else:
            _log(f"    {r['ms']:.3f} ms, error {r['rel_error']:.3g}")
        row["results"][spec.name] = r
    _more_rounds(row, timed, timer, rounds)
    del pristine, inputs, reference, timed
    timer.free_memory()
    return model_report.summarize(row)


def _more_rounds(
    row: dict[str, Any],
    timed: list[tuple[str, Prepared, Callable[[], Any]]],
    timer: Timer,
    rounds: int,
) -> None:
    """Time every backend in ``timed`` ``rounds - 1`` more times, interleaved, and set
    each result's ``ms`` to the median of its rounds (``ms_rounds``: all of them). Frees
    the prepared models."""
    results = row["results"]
    for name, _prepared, _step in timed:
        results[name]["ms_rounds"] = [results[name]["ms"]]
    try:
        for _ in range(rounds - 1):
            for name, prepared, step in timed:
                results[name]["ms_rounds"].append(timer.median_ms(step, prepared.leaves))
    except Exception as exc:  # a round that fails keeps the rounds measured before it
        row["error"] = f"a timing round failed: {run._error_text(exc)}"
    for name, prepared, _step in timed:
        results[name]["ms"] = statistics.median(results[name]["ms_rounds"])
        _clear(prepared.leaves)
    timed.clear()


def run_zoo(args: argparse.Namespace, path_out: list[Path] | None = None) -> dict[str, Any]:
    """Every selected (model, mode); the JSON-ready dict, also written after every row
    (its path appended to ``path_out``) so a run cut short keeps what it measured."""
    started = time.monotonic()
    device = run.pick_device(args.device, args.smoke)
    chosen = zoo.select(args.models)
    if args.batch is not None:
        chosen = [zoo.with_batch(m, args.batch) for m in chosen]
    columns = [
        s
        for s in backends.specs(
            args.backends, strict_tilefuse=not args.allow_fallback, cuda_graphs=args.cudagraphs
        )
        if s.runs_on(KIND)
    ]
    if args.smoke and device.type == "cpu":
        timer: Timer = SmokeTimer(device, quick=True)
    else:
        timer = Timer(device, quick=not args.full_timing)
    unusable = {s.name: backends.unusable_reason(s, device) for s in columns}
    data: dict[str, Any] = run.result_header(
        SCHEMA_VERSION,
        device,
        {
            "smoke": args.smoke,
            "modes": args.modes,
            "backends": args.backends,
            "models": [m.name for m in chosen],
            "timing": timer.method + ("" if args.full_timing or args.smoke else " (quick)"),
            "rounds": args.rounds,
            "batch": args.batch,
            "tilefuse_strict": not args.allow_fallback,
            "cudagraphs": args.cudagraphs,
            "timeout_s": args.timeout,
        },
    )
    machine = data["machine"]
    _log(f"device: {device} ({machine['device']})")
    data |= {
        "backends": {
            s.name: {"usable": unusable[s.name] is None, "reason": unusable[s.name]}
            for s in columns
        },
        "rows": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = run.output_path(args.out, f"models {machine['device']}", run.created_at(data))
    if path_out is not None:
        path_out.append(path)
    run.warm_up(columns, unusable, timer)
    for zm in chosen:
        for mode in args.modes:
            why = run.over_budget(started, args.max_total_s)
            if why is not None:
                row = {"model": zm.name, "mode": mode, "results": {}, "error": why}
                data["rows"].append(model_report.summarize(row))
                continue
            _log(f"{zm.name} / {mode}")
            data["rows"].append(
                run_row(zm, mode, columns, unusable, timer, args.smoke, args.timeout,
                        profile=args.profile_top if args.profile else 0,
                        rounds=args.rounds)
            )  # fmt: skip
            run.write_json(path, data)
    data["geomean_speedup"] = model_report.geomean_speedups(data["rows"])
    data["elapsed_s"] = time.monotonic() - started
    run.write_json(path, data)
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for m in zoo.MODELS:
            print(f"{m.name:20s} {m.library:13s} {m.shape(False):14s} {m.family}")
        return 0
    paths: list[Path] = []
    try:
        data = run_zoo(args, paths)
    except ValueError as exc:  # unknown model or backend names
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(model_report.format_table(data))
    if args.profile:
        print()
        print(model_report.format_profiles(data))
    print(f"\nwrote {paths[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
