"""Algorithm selection: gather candidates, consult the winners cache, benchmark, remember.

Modes (``TILEFUSE_AUTOTUNE`` unless passed):

``off``
    No benchmarking, no cache: the heuristic pick (below) among first-party choices.
``default``
    A cached winner when there is one, else the heuristic pick; never benchmarks, so a
    cold compile costs what a compile without autotuning costs (Inductor's default
    does not autotune GEMMs either). Run once with ``quick`` or ``max`` to fill the cache.
    No unmeasured third-party code runs (``trust``): the pick is among first-party
    choices and third-party ones that passed a correctness check on this machine; only
    when none of those can fuse the epilogue are up to ``MAX_CHECKS`` unchecked
    third-party choices checked, each once, in an isolated worker.
``quick``
    Benchmark each provider's first ``per_provider`` choices plus extern.
``max``
    Benchmark every choice plus extern.

In ``quick`` and ``max`` on CUDA, a winner measured less than ``SUSTAINED_WINDOW`` faster
than what the default mode runs for the problem (``_default_equivalent``) runs again
against it, back to back as in a graph (``timing.sustained_ms``), and stays only if it is
faster there too.

In ``quick`` and ``max``, slow builds (nvcc) are waited for only as long as
``TILEFUSE_AUTOTUNE_BUILD_WAIT_S`` says (``settings``; default: not at all when the build is
not cached). One left building is reported ``still building``; the winner found without it
is cached as a ``quick`` entry, so it serves ``default`` and ``quick`` at once while the next
``max`` selection of the problem measures again, with the finished builds. In this process,
that re-measurement waits until the background builds are done: until then the winner is
reused (``source="cache"``).
``replay``
    Like ``default``, but a cache miss is logged as a warning: for runs that must
    reproduce earlier tuning.

Every mode but ``off`` looks in the remote cache (``TILEFUSE_REMOTE_CACHE``) when the local
one has no winner that serves it, and a benchmarked winner is published there too
(``WinnersCache.get_shared``); ``stats()["autotune_benchmarks"]`` counts selections that
benchmarked.

The heuristic pick: with an epilogue to fuse, the first offered choice that is not
``slow_build``: cuBLASLt's own bias (+ relu) epilogue when the epilogue is exactly
that (``extern.vendor_epilogue_choice``, offered first), else each provider's own pick
in provider order, among the trusted ones; with no epilogue, extern (the vendor library
is the better unmeasured bet for a bare product). On CUDA these modes do not even accept
(``accepts``) an epilogue that only a template computes, unless a measured winner for it
is cached: the vendor GEMM and a separate kernel beat an unmeasured template there. A
cached winner
counts for a mode when it was found with at least that much search (``max`` entries
serve every mode; ``quick`` entries serve all but ``max``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tilefuse import config, counters, plugin
from tilefuse.errors import TilefuseError

from . import benchmark, settings
from .benchmark import PENDING, REASONS, BenchConfig, Outcome
from .cache import WinnersCache, key_digest
from .devices import device_type, with_index
from .extern import EXTERN_PROVIDER, OPS, ExternChoice, vendor_epilogue_choice
from .keys import cache_key_fields, tf32_matmuls
from .measure import Problem
from .progress import Progress
from .trust import CheckRecords, is_first_party

log = logging.getLogger("tilefuse.autotune")

MODES = config.AUTOTUNE_MODES
DEFAULT_PER_PROVIDER = 4
MAX_CHECKS = 2  # unchecked third-party choices a default-mode selection may check
# Check outcomes that say something about the choice itself, and so are remembered.
_VERDICTS = (benchmark.WRONG, benchmark.COMPILE, benchmark.CRASH)
_SERVES = {
    "default": ("quick", "max"),
    "quick": ("quick", "max"),
    "max": ("max",),
    "replay": ("quick", "max"),
}


@dataclass(frozen=True)
class Candidate:
    """A choice and the provider that offered it (``version`` enters the cache key).

    ``first_party`` is ``True`` when tilefuse itself ships the provider (see ``trust``):
    only such a choice runs unmeasured without a correctness check. ``candidates_for``
    sets it; a caller building candidates by hand decides.
    """

    provider: str
    version: str
    choice: Any  # a plugin.Choice
    first_party: bool = False

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.choice.name}"


@dataclass(frozen=True)
class Selection:
    """The outcome of ``select``.

    ``choice`` is the picked ``plugin.Choice``: call its ``compile()`` (cheap when
    the provider caches builds) before ``run()`` in the process that launches it.
    ``source`` is ``"benchmark"``, ``"cache"`` or ``"heuristic"`` (not measured).
    ``timings_ms`` maps the label (``provider/name``) of every candidate that
    passed to its median time; ``failures`` maps each failed label to
    ``(reason, detail)``; ``summary`` is the one line that was logged.
    ``workers`` maps each benchmark worker (``"cuda:0"``, ``"cuda:1"``...) to how many
    candidates it ran; empty when nothing was benchmarked.
    """

    choice: Any
    provider: str
    mode: str
    source: str
    summary: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.choice.name}"

    @property
    def tried(self) -> int:
        return len(self.timings_ms) + len(self.failures)

    def failed_counts(self) -> dict[str, int]:
        """Failed candidates per reason (``benchmark.REASONS``)."""
        return dict(Counter(reason for reason, _ in self.failures.values()))


def extern_candidate(op: str, epilogue: plugin.Epilogue) -> Candidate:
    import torch

    return Candidate(EXTERN_PROVIDER, torch.__version__, ExternChoice(op, epilogue), True)


def vendor_candidate(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
) -> Candidate | None:
    """cuBLASLt's own epilogue (``vendor_epilogue_choice``) as a first-party candidate,
    which the heuristic pick trusts like extern, or ``None`` where it does not apply."""
    import torch

    vendor = vendor_epilogue_choice(op, inputs, layout, epilogue)
    if vendor is None:
        return None
    return Candidate(EXTERN_PROVIDER, torch.__version__, vendor, True)


def _installed_providers() -> list[Any]:
    from tilefuse.discovery import registry

    return list(registry().usable(plugin.CHOICES_GROUP))


def accepts(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
    providers: Iterable[Any] | None = None,
) -> plugin.Verdict:
    """Whether a kernel for ``op`` with ``epilogue`` fused is offered here
    (``plugin.TemplateSelector.accepts``): yes when the vendor library's own epilogue
    computes it exactly or a provider that supports ``op`` on ``layout.device``
    ``accepts`` it; else a ``Verdict.no`` naming each provider's reason. Extern (eager
    torch, which runs any epilogue unfused) does not count. A provider that raises, or
    answers something that is not a ``plugin.Verdict``, counts as a refusal and is logged.
    """
    if vendor_epilogue_choice(op, inputs, layout, epilogue) is not None:
        return plugin.Verdict.yes()
    reasons = []
    for provider in _installed_providers() if providers is None else providers:
        name = getattr(provider, "name", repr(provider))
        try:
            if not provider.supports(op, layout.device):
                continue
            verdict = provider.accepts(op, tuple(inputs), layout, epilogue)
        except Exception as exc:
            log.warning("tilefuse: choice provider %r failed in accepts for %s: %s", name, op, exc)
            reasons.append(f"{name}: raised {type(exc).__name__}")
            continue
        if not isinstance(verdict, plugin.Verdict):
            log.warning("tilefuse: choice provider %r answered accepts with %r", name, verdict)
            reasons.append(f"{name}: answered {type(verdict).__name__}, not a Verdict")
        elif verdict.ok:
            declined = _declined_unmeasured(op, inputs, layout, epilogue)
            return verdict if declined is None else declined
        else:
            reasons.append(f"{name}: {verdict.reason}")
    if not reasons:
        return plugin.Verdict.no(f"no choice provider serves {op} on {layout.device}")
    return plugin.Verdict.no("; ".join(reasons))


def warm_workers(device: str, bench: benchmark.Bench | None = None) -> None:
    """On a CUDA ``device`` (``"cuda"``, ``"cuda:N"``), start the worker zygote
    (``zygote``) in the background if it is not running: a measuring selection later in
    this process (``quick``, ``max``) then forks its workers in milliseconds instead of
    starting interpreters that import torch for seconds. Core calls it (the selector's
    ``warm_up``) at the first CUDA graph a process compiles in any mode but ``off``;
    ``select`` as well, for callers that use it without core. Never raises.
    ``TILEFUSE_WORKER_ZYGOTE=0`` turns it off."""
    if device_type(device) != "cuda":
        return
    try:
        (bench or benchmark.shared_bench()).zygote()
    except Exception as exc:  # an optimisation: without it workers start the slow way
        log.debug("tilefuse: the worker zygote was not started: %s", exc)


# A measured winner less than this factor faster than what the default mode runs is
# compared with it again in a sustained loop, on device types listed here.
SUSTAINED_WINDOW = 1.10
SUSTAINED_TIE = 1.01  # in that loop, the winner must be this much faster to stay
SUSTAINED_DEVICE_TYPES = ("cuda",)
# Below this, a back-to-back loop times the launches more than the kernels.
SUSTAINED_MIN_MS = 0.05


def _default_equivalent(
    tuned: Sequence[Candidate],
    extern: Candidate,
    vendor: Candidate | None,
    epilogue: plugin.Epilogue,
) -> Candidate | None:
    """The candidate that runs what the default mode's graph runs for this problem: the
    vendor product alone (extern) without epilogue steps, the vendor's own epilogue where
    it computes them, else the vendor product then one epilogue pass (a ``vendor_first``
    choice: the default mode leaves such an epilogue unfused); ``None`` if not offered."""
    if not epilogue.steps:
        return extern
    if vendor is not None:
        return vendor
    return next((c for c in tuned if getattr(c.choice, "vendor_first", False)), None)


def _worth_sustained(
    winner: Candidate, baseline: Candidate, timings: dict[str, float], device: str
) -> bool:
    """Whether the measured ``winner`` beat ``baseline`` by too little to trust flushed,
    isolated runs alone (``SUSTAINED_WINDOW``): then a sustained loop decides."""
    if winner is baseline or device_type(device) not in SUSTAINED_DEVICE_TYPES:
        return False
    if timings[winner.label] < SUSTAINED_MIN_MS:  # back to back, launches would be timed
        return False
    base = timings.get(baseline.label)
    return base is not None and base <= SUSTAINED_WINDOW * timings[winner.label]


# Modes that never benchmark: their picks are unmeasured.
_UNMEASURED_MODES = ("off", "default", "replay")


def _declined_unmeasured(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
) -> plugin.Verdict | None:
    """On CUDA, in a mode that never benchmarks, an epilogue that only a template
    computes (cuBLASLt's own bias epilogue was not offered) is fused only when a measured
    winner for it is cached: unmeasured, the vendor GEMM and the epilogue fused into a
    neighbouring kernel is the better bet (gpt2 and vit at batch 1 on an H200: heuristic
    Triton templates with a fused bias + residual took 1.5-2x cuBLAS's time). ``None``
    when fusing is fine."""
    if not layout.device.startswith("cuda") or config.autotune_mode() not in _UNMEASURED_MODES:
        return None
    try:
        offered = candidates_for(op, inputs, layout, epilogue)
        everything = [extern_candidate(op, epilogue), *offered]
        digest = key_digest(cache_key_fields(op, inputs, layout, epilogue, everything))
        entry = _default.cache.get(digest)
    except Exception as exc:  # no measured winner can be read: the unmeasured case
        log.info("tilefuse: no cached winner read for an epilogue verdict: %s", exc)
        entry = None
    if entry is not None and entry.get("provider") != EXTERN_PROVIDER:
        return None
    return plugin.Verdict.no(
        "unmeasured (autotune mode default): the vendor GEMM and a separate epilogue kernel; "
        "TILEFUSE_AUTOTUNE=quick or max measures the fused templates"
    )


def candidates_for(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
    providers: Iterable[Any] | None = None,
) -> list[Candidate]:
    """Every choice of every provider that supports ``op`` on ``layout.device``, in order.

    ``providers`` defaults to the installed ``tilefuse.autotune.choices`` plugins. A
    provider that raises is logged with its name and skipped. Extern is not included.
    ``accepts`` is not asked again here: a provider's ``choices`` yields nothing for a
    request it does not accept.
    """
    if providers is None:
        providers = _installed_providers()
    found: list[Candidate] = []
    for provider in providers:
        name = getattr(provider, "name", repr(provider))
        try:
            if not provider.supports(op, layout.device):
                continue
            offered = list(provider.choices(op, tuple(inputs), layout, epilogue))
        except Exception as exc:
            log.warning("tilefuse: choice provider %r failed for %s: %s", name, op, exc)
            continue
        first_party = is_first_party(provider)
        found += [Candidate(name, str(provider.version), c, first_party) for c in offered]
    return found


def _as_candidates(choices: Iterable[Any]) -> list[Candidate]:
    """Raw choices handed to ``select`` by its caller are the caller's own: trusted."""
    out = []
    for c in choices:
        out.append(c if isinstance(c, Candidate) else Candidate("explicit", "0", c, True))
    return out


def _slow(candidate: Candidate) -> bool:
    return bool(getattr(candidate.choice, "slow_build", False))


def heuristic_pick(
    offered: Sequence[Candidate],
    extern: Candidate,
    epilogue: plugin.Epilogue,
    trusted: Callable[[Candidate], bool] | None = None,
) -> Candidate:
    """The unmeasured pick (see the module docstring): fuse the epilogue when a trusted
    choice that builds quickly can, else extern. ``trusted`` defaults to first party."""
    trusted = trusted or (lambda c: c.first_party)
    if epilogue.steps:
        for candidate in offered:
            if not _slow(candidate) and trusted(candidate):
                return candidate
    return extern


def _short_list(candidates: Sequence[Candidate], per_provider: int) -> list[Candidate]:
    taken: Counter[str] = Counter()
    kept = []
    for c in candidates:
        if taken[c.provider] < per_provider:
            taken[c.provider] += 1
            kept.append(c)
    return kept


def _describe(op: str, inputs: Sequence[plugin.TensorSpec], layout: plugin.TensorSpec) -> str:
    shapes = "x".join("[" + ",".join(map(str, s.shape)) + "]" for s in inputs[: OPS[op]])
    return f"{op} {shapes} {layout.dtype} {layout.device}"


def _summary(
    title: str,
    tried: int,
    failures: dict[str, tuple[str, str]],
    winner: Outcome,
    extern: Outcome,
    timings: dict[str, float],
    workers: dict[str, int],
) -> str:
    counts = Counter(r for r, _ in failures.values())
    pending = counts.pop(PENDING, 0)
    parts = ", ".join(f"{counts[r]} {r}" for r in REASONS if counts[r])
    failed = f"{sum(counts.values())} failed" + (f" ({parts})" if parts else "")
    if pending:
        failed += f", {pending} still building (a later max-mode selection measures them)"
    line = f"{title}: tried {tried}, {failed}; won {winner.label} {winner.time_ms:.4f} ms"
    if winner.label == extern.label:
        line += " (no candidate beat extern)"
    elif extern.ok and extern.time_ms and winner.time_ms:
        speedup = extern.time_ms / winner.time_ms
        line += f", {speedup:.2f}x vs extern {extern.time_ms:.4f} ms"
    else:
        line += f", extern failed ({extern.reason})"
    return line + _best_per_provider(timings) + _per_worker(workers)


def _best_per_provider(timings: dict[str, float]) -> str:
    """``"; best per provider: cuda/x 1.5 ms, triton/y 1.6 ms"`` when several providers ran."""
    best: dict[str, tuple[float, str]] = {}
    for label, ms in timings.items():
        provider = label.split("/", 1)[0]
        if provider not in best or ms < best[provider][0]:
            best[provider] = (ms, label)
    if len(best) < 2:
        return ""
    ranked = sorted(best.values())
    return "; best per provider: " + ", ".join(f"{label} {ms:.4f} ms" for ms, label in ranked)


def _per_worker(workers: dict[str, int]) -> str:
    """``"; measured on cuda:0 4, cuda:1 3"`` when several benchmark workers took part."""
    if len(workers) < 2:
        return ""
    return "; measured on " + ", ".join(f"{name} {n}" for name, n in sorted(workers.items()))


class Autotuner:
    """Selection with explicit settings; ``select()`` below uses a default one.

    ``cache`` defaults to ``WinnersCache()`` (under ``config.cache_dir()``, read at
    each call); ``bench`` defaults to the process-wide workers.
    """

    def __init__(
        self,
        *,
        cache: WinnersCache | None = None,
        bench_config: BenchConfig | None = None,
        per_provider: int = DEFAULT_PER_PROVIDER,
        seed: int = 0,
        bench: benchmark.Bench | None = None,
    ) -> None:
        self._cache = cache
        self.bench_config = bench_config or BenchConfig()
        self.per_provider = per_provider
        self.seed = seed
        self.bench = bench
        # digest -> the candidates a provisional winner was picked without (still building)
        self._provisional: dict[str, list[Any]] = {}

    @property
    def cache(self) -> WinnersCache:
        return self._cache if self._cache is not None else WinnersCache()

    def select(
        self,
        op: str,
        choices: Iterable[Any] | None,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue | None = None,
        *,
        mode: str | None = None,
    ) -> Selection:
        """Pick a choice for ``op``; see ``tilefuse_autotune.select``."""
        epilogue = epilogue if epilogue is not None else plugin.Epilogue()
        mode = mode or config.autotune_mode()
        if mode not in MODES:
            raise TilefuseError(f"autotune mode {mode!r} is not one of {', '.join(MODES)}")
        if op not in OPS:
            raise TilefuseError(f"cannot autotune op {op!r}; known ops: {', '.join(OPS)}")
        if mode != "off":
            warm_workers(layout.device, self.bench)
        inputs = tuple(inputs)
        if choices is None:
            offered = candidates_for(op, inputs, layout, epilogue)
        else:
            offered = _as_candidates(choices)
        extern = extern_candidate(op, epilogue)
        vendor = vendor_candidate(op, inputs, layout, epilogue)
        if vendor is not None:
            offered = [vendor, *offered]
        everything = [extern, *offered]
        labels = [c.label for c in everything]
        if len(set(labels)) != len(labels):
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            raise ValueError(f"choice labels must be unique: {dupes}")
        title = f"autotune {_describe(op, inputs, layout)} ({mode})"

        if mode == "off":
            heuristic = heuristic_pick(offered, extern, epilogue)
            return self._unmeasured(heuristic, mode, f"{title}: off, took {heuristic.label}")

        fields = cache_key_fields(op, inputs, layout, epilogue, everything)
        digest = key_digest(fields)
        entry = self.cache.get(digest)
        if entry is None or entry["mode"] not in _SERVES[mode]:
            entry = self.cache.get_shared(digest) or entry
        if entry is not None and entry["mode"] in _SERVES[mode]:
            by_key = {(c.provider, c.choice.name): c for c in everything}
            hit = by_key.get((entry["provider"], entry["choice"]))
            if hit is not None:
                return self._unmeasured(
                    hit, mode, f"{title}: cached winner {hit.label}", source="cache"
                )
            log.info("%s: cached winner %s/%s is no longer offered", title, entry["provider"],
                     entry["choice"])  # fmt: skip
        if entry is not None and self._still_building(digest):
            by_key = {(c.provider, c.choice.name): c for c in everything}
            hit = by_key.get((entry["provider"], entry["choice"]))
            if hit is not None:
                text = f"{title}: provisional winner {hit.label} (candidates still building)"
                return self._unmeasured(hit, mode, text, source="cache")

        problem = Problem(op, _current_device(inputs), _current_device([layout])[0],
                          epilogue, self.seed, tf32_matmuls(layout.device))  # fmt: skip
        checks = CheckRecords(self.cache, fields)
        if mode in ("default", "replay"):
            heuristic, note = self._checked_pick(offered, extern, epilogue, checks, problem)
            text = f"{title}: no cached winner; took the heuristic pick {heuristic.label}"
            text += " unmeasured" + note
            if mode == "replay":
                log.warning("%s", text)
            return self._unmeasured(heuristic, mode, text)

        shortlist = _short_list(offered, self.per_provider) if mode == "quick" else offered
        tuned = [extern, *shortlist]
        progress = Progress(title, len(tuned))
        counters.bump("autotune_benchmarks")
        started = time.monotonic()
        bench_config = self.bench_config
        if bench_config.build_wait_s is None:
            bench_config = replace(bench_config, build_wait_s=settings.build_wait_s())
        run = benchmark.run_benchmarks(
            problem,
            [c.label for c in tuned],
            [c.choice for c in tuned],
            bench_config,
            progress,
            self.bench,
        )
        outcomes = run.outcomes
        if outcomes[0].ok:  # with a working reference, each outcome is a verdict
            for candidate, outcome in zip(tuned, outcomes):
                if not candidate.first_party:
                    checks.record(candidate, outcome)
        timings = {o.label: o.time_ms for o in outcomes if o.ok and o.time_ms is not None}
        workers = benchmark.worker_counts(outcomes)
        failures = {o.label: (o.reason or "", o.detail) for o in outcomes if not o.ok}
        for label, (reason, detail) in failures.items():
            log.info("%s: dropped %s: %s: %s", title, label, reason, detail)
        pending = [c.choice for c, o in zip(tuned, outcomes) if o.reason == PENDING]
        if pending:
            self._provisional[digest] = pending
        else:
            self._provisional.pop(digest, None)
        if not timings:
            text = f"{title}: every candidate failed, extern included; using extern unmeasured"
            log.warning("%s (%s)", text, failures)
            return Selection(
                extern.choice, extern.provider, mode, "heuristic", text, {}, failures, workers
            )
        best = min(timings, key=lambda label: timings[label])
        winner = next(c for c in tuned if c.label == best)
        text = _summary(
            title,
            len(outcomes),
            failures,
            Outcome(best, timings[best]),
            outcomes[0],
            timings,
            workers,
        )
        baseline = _default_equivalent(tuned, extern, vendor, epilogue)
        if baseline is not None and _worth_sustained(winner, baseline, timings, layout.device):
            winner, note = self._sustained_pick(problem, winner, baseline, timings)
            best = winner.label
            text += note
        text += (
            f"; took {time.monotonic() - started:.1f} s (quick builds done at "
            f"{run.quick_builds_s:.1f} s)"
        )
        log.info("%s", text)
        self.cache.put(
            digest,
            {
                "provider": winner.provider,
                "choice": winner.choice.name,
                # Found without the candidates still building: not a full max search.
                "mode": "quick" if pending else mode,
                "time_ms": timings[best],
                "extern_ms": timings.get(extern.label),
                "key": fields,
            },
            share=True,
        )
        return Selection(
            winner.choice, winner.provider, mode, "benchmark", text, timings, failures, workers
        )

    def _sustained_pick(
        self,
        problem: Problem,
        winner: Candidate,
        baseline: Candidate,
        timings: dict[str, float],
    ) -> tuple[Candidate, str]:
        """``winner`` or ``baseline``, whichever runs faster in a sustained loop
        (``timing.sustained_ms``; ties within ``SUSTAINED_TIE`` go to ``baseline``), and a
        note for the summary. Where the loop fails, ``winner``, unless it was ``winner``'s
        output that no longer matched extern: then ``baseline``."""
        pair = [winner, baseline]
        times, why = benchmark.sustained_times(
            problem,
            [c.choice for c in pair],
            [timings[c.label] for c in pair],
            self.bench_config,
            self.bench,
        )
        if times is None:
            if (why or "").startswith("WrongResult"):  # it passed once: not to be trusted
                return baseline, f"; sustained comparison: {winner.label} failed ({why})"
            return winner, "; sustained comparison with the default's pick failed"
        pick = winner if times[0] * SUSTAINED_TIE < times[1] else baseline
        return pick, (
            f"; sustained, {winner.label} {times[0]:.4f} ms vs the default's "
            f"{baseline.label} {times[1]:.4f} ms: took {pick.label}"
        )

    def _checked_pick(
        self,
        offered: Sequence[Candidate],
        extern: Candidate,
        epilogue: plugin.Epilogue,
        checks: CheckRecords,
        problem: Problem,
    ) -> tuple[Candidate, str]:
        """The default-mode pick and a note for the summary (see the module docstring)."""
        pick = heuristic_pick(
            offered, extern, epilogue, lambda c: c.first_party or checks.passed(c) is True
        )
        if not pick.first_party:
            return pick, " (third party: passed a correctness check on this machine)"
        if pick is not extern or not epilogue.steps:
            return pick, ""
        unchecked = [
            c for c in offered if not c.first_party and not _slow(c) and checks.passed(c) is None
        ][:MAX_CHECKS]
        if not unchecked:
            return extern, ""
        outcomes = benchmark.check_candidates(
            problem, [c.label for c in unchecked], [c.choice for c in unchecked],
            self.bench_config, self.bench,
        )  # fmt: skip
        refused = []
        for candidate, outcome in zip(unchecked, outcomes):
            # A run error or timeout may be this machine's (memory, a busy GPU): only a
            # pass, a wrong result, a failed build or a crash is remembered as a verdict.
            if outcome.ok or outcome.reason in _VERDICTS:
                checks.record(candidate, outcome)
            if outcome.ok:
                return candidate, " (third party: passed a correctness check just now)"
            refused.append(f"{candidate.label}: {outcome.reason} ({outcome.detail})")
            log.warning("tilefuse: autotune refused third-party choice %s", refused[-1])
        return extern, "; third-party choices failed their check: " + "; ".join(refused)

    def _still_building(self, digest: str) -> bool:
        """Whether this process picked ``digest``'s winner without candidates whose builds
        are still running in the background."""
        pending = self._provisional.get(digest)
        if not pending:
            return False
        bench = self.bench or benchmark.shared_bench()
        if bench.still_building(pending):
            return True
        del self._provisional[digest]
        return False

    @staticmethod
    def _unmeasured(
        candidate: Candidate, mode: str, text: str, source: str = "heuristic"
    ) -> Selection:
        log.info("%s", text)
        return Selection(candidate.choice, candidate.provider, mode, source, text)


def _current_device(specs: Sequence[plugin.TensorSpec]) -> tuple[plugin.TensorSpec, ...]:
    """``specs`` with a bare ``"cuda"`` made the current CUDA device (``"cuda:N"``), so a
    worker process, whose current device is its own, runs on the caller's device."""
    return tuple(replace(spec, device=with_index(spec.device)) for spec in specs)


_default = Autotuner()


def select(
    op: str,
    choices: Iterable[Any] | None,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue | None = None,
    *,
    mode: str | None = None,
) -> Selection:
    """Pick the fastest correct kernel for ``op`` and remember it.

    ``op`` is ``"mm"``, ``"addmm"`` or ``"bmm"`` (conventions in ``plugin.Choice``);
    ``inputs`` are ``TensorSpec`` of the op's tensors then the epilogue's operands;
    ``layout`` is the output's ``TensorSpec``. ``choices`` is ``None`` to use every
    installed ``tilefuse.autotune.choices`` provider that supports the op on
    ``layout.device``, or an explicit list of ``Choice`` / ``Candidate`` objects.
    The extern choice (eager torch) always competes and is the correctness
    reference. ``mode`` defaults to ``TILEFUSE_AUTOTUNE`` (see the module docstring).

    Never raises because a candidate failed; raises ``TilefuseError`` for an unknown
    mode or op and ``CacheError`` if the cache directory cannot be written.
    """
    return _default.select(op, choices, inputs, layout, epilogue, mode=mode)
