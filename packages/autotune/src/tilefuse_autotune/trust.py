"""Which choices may run unmeasured: first-party ones, and ones checked on this machine.

Modes ``off``, ``default`` and ``replay`` take a choice without timing it (the
heuristic pick). No unmeasured third-party code runs there:

- **First party**: a provider shipped in one of tilefuse's own distributions
  (``FIRST_PARTY_DISTRIBUTIONS``), judged by the distribution that declared its entry
  point (for a provider object passed in directly: the distribution that installed its
  module). The extern choices (eager torch, cuBLASLt's own epilogue) are first party,
  and so are raw ``Choice`` objects that a caller hands to ``select`` itself.
- **Third party**: every other provider. Its choice is taken unmeasured only when a
  check record says it computed this problem correctly on this machine.

A check runs the choice once in an isolated worker process, exactly as a benchmark
does (``benchmark.check_candidates``): a crash, hang, error or wrong answer costs
only that worker. ``CheckRecords`` keeps the verdicts in the winners cache, keyed by
the problem (op, shapes, strides, dtypes, epilogue), the device, the toolchain
versions and the choice (``provider==version`` and name); a ``quick`` or ``max``
benchmark records one for every third-party candidate it ran.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

from .benchmark import Outcome
from .cache import WinnersCache, key_digest

FIRST_PARTY_DISTRIBUTIONS = frozenset(
    {
        "tilefuse-autotune",
        "tilefuse-backend-cuda",
        "tilefuse-backend-rocm",
        "tilefuse-backend-triton",
    }
)


def _normalize(dist: str) -> str:
    return dist.strip().lower().replace("_", "-").replace(".", "-")


def provider_distribution(provider: Any) -> str | None:
    """The distribution that provides ``provider``: its entry point's, else its module's."""
    from tilefuse import plugin
    from tilefuse.discovery import registry

    record = registry().record_of(plugin.CHOICES_GROUP, provider)
    if record is not None and record.dist != "<unknown distribution>":
        return record.dist.split()[0]
    top = type(provider).__module__.split(".", 1)[0]
    try:
        dists = _metadata.packages_distributions().get(top, [])
    except Exception:  # broken metadata on sys.path: trust nothing
        return None
    names = {_normalize(d) for d in dists}
    return names.pop() if len(names) == 1 else None


def is_first_party(provider: Any) -> bool:
    """True when ``provider`` ships in one of ``FIRST_PARTY_DISTRIBUTIONS``."""
    dist = provider_distribution(provider)
    return dist is not None and _normalize(dist) in FIRST_PARTY_DISTRIBUTIONS


class CheckRecords:
    """Verdicts of correctness checks for one problem (``key_fields`` without providers).

    ``passed(candidate)`` is ``True`` or ``False`` for a recorded verdict, ``None``
    when the choice was never checked on this problem here.
    """

    def __init__(self, cache: WinnersCache, key_fields: dict[str, Any]) -> None:
        self.cache = cache
        self.problem = {k: v for k, v in key_fields.items() if k != "providers"}

    def _digest(self, candidate: Any) -> str:
        choice = f"{candidate.provider}=={candidate.version}/{candidate.choice.name}"
        return key_digest({"check": choice, **self.problem})

    def passed(self, candidate: Any) -> bool | None:
        entry = self.cache.get(self._digest(candidate))
        if entry is None or entry.get("mode") != "check":
            return None
        verdict = entry.get("passed")
        return verdict if isinstance(verdict, bool) else None

    def record(self, candidate: Any, outcome: Outcome) -> None:
        """Store ``outcome`` as the verdict (a timeout fails too: it would cost every compile)."""
        self.cache.put(
            self._digest(candidate),
            {
                "provider": candidate.provider,
                "choice": candidate.choice.name,
                "mode": "check",
                "passed": outcome.ok,
                "reason": outcome.reason,
                "detail": outcome.detail[:500],
                "key": {"check": candidate.label, **self.problem},
            },
        )
