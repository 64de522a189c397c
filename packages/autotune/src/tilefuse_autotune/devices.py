"""Which devices benchmark a selection: one isolated worker per local GPU like the compiling one.

Every candidate of one selection is timed on one device, but not all on the same one:
``worker_devices`` lists the devices whose workers share the work. Timings taken on
different GPUs are compared with each other, which is sound only when the GPUs are the
same model: so only GPUs whose ``torch.cuda.get_device_name`` equals the compiling
device's take part (two H200s time a kernel alike within the noise of one; an H100
next to an H200 would not). The compiling device always comes first.

``TILEFUSE_AUTOTUNE_WORKERS=N`` (an integer >= 1) caps the number of benchmark workers on
a GPU machine (``1``: the compiling GPU alone), and sets it for CPU problems, which
otherwise get one worker (CPU timings are for tests; several CPU workers exist so that
the spreading itself is tested without a GPU).
"""

from __future__ import annotations

import logging
import os

from tilefuse.errors import TilefuseError

log = logging.getLogger("tilefuse.autotune")

WORKERS_ENV = "TILEFUSE_AUTOTUNE_WORKERS"
_left_out_noted: set[tuple[int, ...]] = set()  # each set of left-out GPUs is logged once


def requested_workers() -> int | None:
    """``TILEFUSE_AUTOTUNE_WORKERS`` as a positive integer, or ``None`` when unset or empty.

    Raises ``TilefuseError`` naming the variable when it is set to anything else.
    """
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise TilefuseError(
            f"{WORKERS_ENV}={raw!r} is not a positive integer; set it to the number of "
            "benchmark workers to use (1 keeps benchmarking on the compiling device), or unset it"
        )
    return count


def device_type(device: str) -> str:
    """The torch device type of a device string: ``"cuda:1"`` -> ``"cuda"``."""
    return device.split(":", 1)[0]


def device_index(device: str) -> int | None:
    """The CUDA device index ``device`` names: ``"cuda:N"`` -> N, a bare ``"cuda"`` -> the
    current device (``torch.cuda.current_device()``), any other device type -> ``None``.

    Raises ``TilefuseError`` for a malformed CUDA device string.
    """
    if device_type(device) != "cuda":
        return None
    _, _, index = device.partition(":")
    if not index:
        import torch

        return int(torch.cuda.current_device())
    if not index.isdigit():
        raise TilefuseError(f"device {device!r} is not 'cuda' or 'cuda:N' with an integer N")
    return int(index)


def with_index(device: str) -> str:
    """``device`` with a bare ``"cuda"`` made explicit (``"cuda:N"``, the current device),
    so that another process, whose current device is its own, means the same GPU."""
    index = device_index(device)
    return device if index is None else f"cuda:{index}"


def worker_devices(device: str) -> list[str]:
    """The devices whose benchmark workers measure candidates compiled for ``device``.

    CUDA (``"cuda"`` or ``"cuda:N"``): the compiling GPU first, then every other visible
    GPU of the same name, in index order, at most ``TILEFUSE_AUTOTUNE_WORKERS`` in all.
    Any other device type (the CPU): ``device`` repeated ``TILEFUSE_AUTOTUNE_WORKERS``
    times (default once). Never empty.
    """
    limit = requested_workers()
    home = device_index(device)
    if home is None:
        return [device] * (limit or 1)
    import torch

    name = torch.cuda.get_device_name(home)
    same: list[int] = [home]
    other: list[int] = []
    for index in range(torch.cuda.device_count()):
        if index != home:
            (same if torch.cuda.get_device_name(index) == name else other).append(index)
    if other and tuple(other) not in _left_out_noted:
        _left_out_noted.add(tuple(other))
        log.info(
            "tilefuse: autotune benchmarks on the GPUs named %r only; left out %s (another "
            "model: their timings would not compare)",
            name,
            ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in other),
        )
    return [f"cuda:{i}" for i in same[:limit]]
