"""The CUDA backend's own settings: the one place that reads its environment variables.

``TILEFUSE_CUDA_MAX_CANDIDATES``: how many CUTLASS configurations one GEMM request offers
(and so builds) under ``TILEFUSE_AUTOTUNE=max``, ranked by ``configs.rank``; the heuristic
pick is always one of them. Default: as many as the machine builds in one round of
parallel nvcc processes (``os.cpu_count()``, capped at 16 like the autotuner's compile
pool), and at least ``MIN_MAX_CANDIDATES``.

``TILEFUSE_CUDA_COMPILE_BUDGET_S``: seconds, counted from when a request's choices are
offered, after which no further nvcc build of that request starts (a choice whose build
would start later fails with the reason, unless its ``.so`` is cached; the heuristic pick
is always built). It applies in every mode that builds candidates, max mode being the one
where it matters. Unset or ``0``: no limit.

Both are read when choices are offered, so a test or a notebook can change them between
compiles. A value that is not a number raises ``TilefuseError`` naming the variable.
"""

from __future__ import annotations

import os

from tilefuse import plugin
from tilefuse.errors import TilefuseError

MAX_CANDIDATES_ENV = "TILEFUSE_CUDA_MAX_CANDIDATES"
COMPILE_BUDGET_ENV = "TILEFUSE_CUDA_COMPILE_BUDGET_S"
MIN_MAX_CANDIDATES = 4
MAX_PARALLEL_BUILDS = 16  # the autotuner's compile pool is at most this wide


def max_candidates() -> int:
    """CUTLASS configurations offered per request in max mode (at least 1)."""
    value = plugin.positive_int_env(
        MAX_CANDIDATES_ENV,
        "how many CUTLASS configurations max-mode autotuning may build per GEMM (e.g. 4)",
    )
    if value is None:
        cores = min(MAX_PARALLEL_BUILDS, os.cpu_count() or 1)
        return max(MIN_MAX_CANDIDATES, cores)
    return value


def compile_budget_s() -> float | None:
    """Seconds after which no further build of a request starts; ``None`` for no limit."""
    raw = os.environ.get(COMPILE_BUDGET_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0.0 or value == float("inf"):
        raise TilefuseError(
            f"{COMPILE_BUDGET_ENV}={raw!r} is not a number of seconds: set it to how long "
            "max-mode autotuning may keep starting nvcc builds for one GEMM (e.g. 120), "
            "or to 0 / unset for no limit"
        )
    return value or None
