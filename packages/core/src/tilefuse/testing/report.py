"""What a conformance run found: a ``CaseResult`` per case, in a ``ConformanceReport``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    """How one case ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class CaseFailed(Exception):
    """Raised by a case to fail with ``str(exc)`` as its reason."""


class CaseSkipped(Exception):
    """Raised by a case that cannot run here (e.g. a dtype the backend does not declare);
    ``str(exc)`` says why. A skip is not a failure."""


@dataclass(frozen=True)
class CaseResult:
    """One case: its ``name`` (``"<section>: <what>"``), ``outcome``, the ``reason`` of a
    failure or skip (empty for a pass) and how many ``seconds`` it took."""

    name: str
    outcome: Outcome
    reason: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def skipped(self) -> bool:
        return self.outcome is Outcome.SKIPPED


@dataclass
class ConformanceReport:
    """Every case run against backend ``backend`` (from distribution ``dist``) on
    ``device`` (a torch device type, or ``None`` when no differential case could run)."""

    backend: str
    dist: str = ""
    device: str | None = None
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> list[CaseResult]:
        return [r for r in self.results if r.passed]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.failed]

    @property
    def skipped(self) -> list[CaseResult]:
        return [r for r in self.results if r.skipped]

    @property
    def ok(self) -> bool:
        """``True`` when no case failed (skips allowed)."""
        return not self.failed

    def summary(self) -> str:
        """The last line the CLI prints: ``N passed, M failed`` (``, K skipped`` if any)."""
        line = f"{len(self.passed)} passed, {len(self.failed)} failed"
        return line + (f", {len(self.skipped)} skipped" if self.skipped else "")

    def format(self, verbose: bool = False) -> str:
        """A readable report: a header, every failure and skip with its reason, then
        ``summary()``. Skips sharing one reason are shown once, with their count, unless
        ``verbose``, which lists every case (passes too) with its time."""
        where = f" on {self.device}" if self.device else ""
        dist = f" ({self.dist})" if self.dist else ""
        lines = [f"tilefuse conformance: backend {self.backend!r}{dist}{where}"]
        same_reason: dict[str, list[CaseResult]] = {}
        for r in self.skipped:
            same_reason.setdefault(r.reason, []).append(r)
        shown: set[str] = set()
        for r in self.results:
            if r.passed and not verbose:
                continue
            group = same_reason.get(r.reason, []) if r.skipped else []
            if not verbose and len(group) > 3:
                if r.reason in shown:
                    continue
                shown.add(r.reason)
                lines.append(f"SKIPPED {len(group)} cases (the first: {r.name!r})")
            else:
                timing = f" [{r.seconds:.2f}s]" if verbose else ""
                lines.append(f"{r.outcome.value.upper():<8}{r.name}{timing}")
            if r.reason:
                lines.extend(f"        {part}" for part in r.reason.splitlines())
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` listing the failures (for a third party's pytest)."""
        if self.failed:
            raise AssertionError(self.format())
