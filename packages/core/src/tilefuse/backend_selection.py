"""Which backend owns which node: the one documented ownership rule.

For a device type, the candidate backends are the installed, usable, available
ones whose ``info.device_types`` contain it (restricted to ``TILEFUSE_BACKENDS``
when that is set). A node needing capability ``c`` is owned by the candidate
with the highest ``priority`` among those declaring ``c``; ties break by name.
So on CUDA, Triton owns pointwise and reduction kernels while a C++ backend
that declares only ``template:gemm`` at higher priority owns GEMM templates.

GEMM templates: every available backend declaring ``template:gemm`` on the device is
asked (``can_fuse_vertical``) whether it can render a candidate epilogue; the epilogue is
fused when at least one accepts, and the autotuner then times every provider's choices for
the fused problem against the extern (cuBLAS) call, which can always run it.

Core asks only "which backend owns this"; it never tests device names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import config, plugin
from .discovery import Registry, registry
from .errors import NoBackendError, PluginLoadError

log = logging.getLogger("tilefuse")

_loaded: dict[str, Callable[[plugin.CompileContext], Any]] = {}


def _availability(backend: Any) -> plugin.Availability:
    try:
        return backend.availability()
    except Exception as exc:  # availability() must not raise; treat it as "no"
        return plugin.Availability.unavailable(f"availability() raised {exc!r}")


def candidate_backends(device_type: str, reg: Registry | None = None) -> list[Any]:
    """Usable, available backends for ``device_type``, best first.

    Raises ``PluginError`` when a backend named in ``TILEFUSE_BACKENDS`` is
    missing or broken, naming it and the installed ones.
    """
    reg = reg or registry()
    requested = config.requested_backends()
    if requested:
        pool = [reg.get(plugin.BACKENDS_GROUP, name) for name in requested]
    else:
        pool = reg.usable(plugin.BACKENDS_GROUP)
    found = [b for b in pool if device_type in b.info.device_types and _availability(b).ok]
    found.sort(key=lambda b: (-b.info.priority, b.info.name))
    return found


def owner(device_type: str, capability: str, reg: Registry | None = None) -> Any:
    """The backend that owns nodes of ``capability`` on ``device_type``.

    Raises ``NoBackendError`` with one line saying what is missing.
    """
    candidates = candidate_backends(device_type, reg)
    for b in candidates:
        if capability in b.info.capabilities:
            return b
    raise NoBackendError(no_backend_message(device_type, capability, reg))


def no_backend_message(device_type: str, capability: str, reg: Registry | None = None) -> str:
    reg = reg or registry()
    lines = []
    for r in reg.records(plugin.BACKENDS_GROUP):
        if not r.usable:
            lines.append(f"{r.name} ({r.reason})")
            continue
        b = r.obj
        if device_type not in b.info.device_types:
            lines.append(f"{r.name} (serves {', '.join(b.info.device_types) or 'nothing'})")
        elif not (av := _availability(b)).ok:
            lines.append(f"{r.name} ({av.reason})")
        elif capability not in b.info.capabilities:
            lines.append(f"{r.name} (no {capability} support)")
    seen = "; ".join(lines) if lines else "no backend plugins are installed"
    return (
        f"no backend for device {device_type!r} ({capability}): {seen}. "
        "Install one (e.g. pip install tilefuse-backend-triton) or run `tilefuse backends`."
    )


def load_backend(backend: Any) -> Callable[[plugin.CompileContext], Any]:
    """Phase two: ``backend.load()``, once per process; failures name the plugin."""
    name = backend.info.name
    if name not in _loaded:
        try:
            _loaded[name] = backend.load()
        except Exception as exc:
            raise PluginLoadError(
                f"backend {name!r} failed to load: {type(exc).__name__}: {exc}. "
                "Check its toolkit installation, or exclude it by listing the backends "
                "you want in TILEFUSE_BACKENDS."
            ) from exc
    return _loaded[name]


def active_policy(reg: Registry | None = None) -> Any | None:
    """The scheduling policy named by ``TILEFUSE_POLICY``, or ``None``."""
    name = config.requested_policy()
    if name is None:
        return None
    return (reg or registry()).get(plugin.SCHEDULING_GROUP, name)
