"""The autotuner's settings read from the environment (besides ``devices.WORKERS_ENV``).

``TILEFUSE_AUTOTUNE_BUILD_WAIT_S``: how long a benchmarking selection waits for the builds
of ``slow_build`` choices (nvcc-built CUTLASS kernels), in seconds counted from the start
of the selection. The selection always waits for every other choice (Triton builds take
seconds) and measures whatever slow builds finished by then or by the deadline, whichever
is later. A slow build still running at that point is not waited for: it keeps building in
the background and its artifact lands in the cache, so a later ``max``-mode selection of
the same problem (in this process once it is done, or in the next one) measures it; the
winner picked without it is cached as provisional. Default ``0``: never wait for an
uncached nvcc build, so a cold ``max`` selection takes seconds, not minutes. Set it to
``600`` to wait for every build, as a one-off tuning run that must try everything.
"""

from __future__ import annotations

import os

from tilefuse.errors import TilefuseError

BUILD_WAIT_ENV = "TILEFUSE_AUTOTUNE_BUILD_WAIT_S"


def build_wait_s() -> float:
    """``TILEFUSE_AUTOTUNE_BUILD_WAIT_S`` in seconds (``0.0`` when unset or empty).

    Raises ``TilefuseError`` naming the variable for anything but a finite number >= 0.
    """
    raw = os.environ.get(BUILD_WAIT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise TilefuseError(
            f"{BUILD_WAIT_ENV}={raw!r} is not a number of seconds: set it to how long a "
            "benchmarking selection may wait for nvcc builds (0: never wait for an uncached "
            "build; 600: wait for every build)"
        )
    return value
