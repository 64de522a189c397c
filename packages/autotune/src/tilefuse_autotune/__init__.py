"""tilefuse-autotune: pick the fastest correct candidate kernel for an op, and remember it.

Public API: ``select`` (the entry point), ``Autotuner`` (the same with explicit
settings), ``Selection``, ``Candidate``, ``candidates_for``, ``ExternChoice``,
``WinnersCache``, ``BenchConfig``, ``TimingConfig``, ``heuristic_pick`` and
``release_workers``. See README.md.
"""

from __future__ import annotations

from .benchmark import BenchConfig, release_workers
from .cache import WinnersCache
from .extern import ExternChoice
from .selection import (
    MODES,
    Autotuner,
    Candidate,
    Selection,
    candidates_for,
    heuristic_pick,
    select,
)
from .timing import TimingConfig

__all__ = [
    "MODES",
    "Autotuner",
    "BenchConfig",
    "Candidate",
    "ExternChoice",
    "Selection",
    "TimingConfig",
    "WinnersCache",
    "candidates_for",
    "heuristic_pick",
    "release_workers",
    "select",
]
