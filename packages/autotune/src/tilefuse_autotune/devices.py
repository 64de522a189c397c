"""Which devices benchmark a selection: one isolated worker per local GPU like the compiling one.

Every candidate of one selection is timed on one device, but not all on the same one:
``worker_devices`` lists the devices whose workers share the work. Timings taken on
different GPUs are compared with each other, which is sound only when the GPUs are the
same model: so only GPUs whose ``torch.cuda.get_device_name`` equals the compiling
device's take part (two H200s time a kernel alike within the noise of one; an H100
next to an H200 would not). The compiling device always comes first.

A worker is pinned to its GPU through the visible-devices variable (``pinned_env``): in
the worker, the compiling device's index names the worker's own GPU. Candidates are
built for the compiling device and may name it (a Triton choice warms up on
``layout.device``), so each of them, the inputs and the reference all land on the
worker's GPU without being told which one it is.

``TILEFUSE_AUTOTUNE_WORKERS=N`` (an integer >= 1) caps the number of benchmark workers on
a GPU machine (``1``: the compiling GPU alone), and sets it for CPU problems, which
otherwise get one worker (CPU timings are for tests; several CPU workers exist so that
the spreading itself is tested without a GPU).
"""

from __future__ import annotations

import logging
import os

from tilefuse import plugin
from tilefuse.errors import TilefuseError

log = logging.getLogger("tilefuse.autotune")

WORKERS_ENV = "TILEFUSE_AUTOTUNE_WORKERS"
_left_out_noted: set[tuple[int, ...]] = set()  # each set of left-out GPUs is logged once


def requested_workers() -> int | None:
    """``TILEFUSE_AUTOTUNE_WORKERS`` as a positive integer, or ``None`` when unset or empty.

    Raises ``TilefuseError`` naming the variable when it is set to anything else.
    """
    return plugin.positive_int_env(
        WORKERS_ENV,
        "the number of benchmark workers to use (1 keeps benchmarking on the compiling device)",
    )


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
    In a job of several processes (``WORLD_SIZE`` or ``LOCAL_WORLD_SIZE`` above 1, as
    torchrun sets) the other GPUs belong to other ranks: only the compiling GPU, unless
    ``TILEFUSE_AUTOTUNE_WORKERS`` asks for more.
    Any other device type (the CPU): ``device`` repeated ``TILEFUSE_AUTOTUNE_WORKERS``
    times (default once). Never empty.
    """
    limit = requested_workers()
    home = device_index(device)
    if home is None:
        return [device] * (limit or 1)
    if limit is None and _in_multi_process_job():
        return [f"cuda:{home}"]
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


def _in_multi_process_job() -> bool:
    """Whether this process is one rank of a job launched over several processes."""
    for var in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def visible_devices_var() -> str:
    """The variable that lists the GPUs a process sees: ``HIP_VISIBLE_DEVICES`` under a
    ROCm build of torch, else ``CUDA_VISIBLE_DEVICES``."""
    import torch

    return "HIP_VISIBLE_DEVICES" if getattr(torch.version, "hip", None) else "CUDA_VISIBLE_DEVICES"


def pinned_env(home: int, gpu: int) -> dict[str, str]:
    """Environment settings for a worker that runs on GPU ``gpu`` (this process's index)
    what was built for GPU ``home``: the visible-devices list of this process with
    positions ``home`` and ``gpu`` swapped, so that ``cuda:<home>`` (and a bare ``"cuda"``
    once the worker makes ``home`` current) is GPU ``gpu`` there, and every index still
    names a GPU. Empty when ``gpu == home``: the worker sees what this process sees.
    """
    if gpu == home:
        return {}
    import torch

    count = torch.cuda.device_count()
    var = visible_devices_var()
    listed = [entry.strip() for entry in os.environ.get(var, "").split(",") if entry.strip()]
    # Entries past the visible count are ignored by the runtime (it stops at an invalid one).
    entries = listed[:count] if len(listed) >= count else [str(i) for i in range(count)]
    entries[home], entries[gpu] = entries[gpu], entries[home]
    return {var: ",".join(entries)}
