"""Which backend owns which node: the one documented ownership rule.

For a device type, the candidate backends are the installed, usable, available
ones whose ``info.device_types`` contain it (restricted to ``TILEFUSE_BACKENDS``
when that is set). A node needing capability ``c`` is owned by the candidate
with the highest ``priority`` among those declaring ``c``; ties break by name. A fused
kernel that contains a reduction needs ``reduction``; any other fused kernel ``pointwise``.
So on CUDA, Triton owns pointwise and reduction kernels while a C++ backend
that declares only ``template:gemm`` at higher priority owns GEMM templates.

Phase one (``candidate_backends``, ``owner``) reads descriptors and asks
``availability()``; phase two (``load_owner``, ``load_backend``) calls ``load()``.
A backend that breaks its contract in either phase (``availability()`` raises or
answers something that is not a ``plugin.Availability``; ``load()`` raises or returns
something not callable) is marked broken in the registry, logged once with its
distribution, and passed over: ownership goes to the next candidate declaring the
capability. A backend named in ``TILEFUSE_BACKENDS`` that breaks raises
``PluginLoadError`` instead, naming it, the installed backends and the fix.

GEMM templates are picked by the installed ``plugin.TemplateSelector`` (the autotuner,
found through its entry point; ``template_selector``). With none installed, or no backend
declaring ``template:gemm`` on the device, a template runs as an eager torch call. A
candidate epilogue is fused when the selector ``accepts`` it (one of its choice providers
offers a kernel with it fused), asked once by the scheduler; the autotuner then times the
providers' choices for the fused problem against the extern (eager torch) call.

The active scheduling policy reaches the scheduler and backends only as a
``policy_check.CheckedPolicy``, which validates each of its answers.

Core asks only "which backend owns this"; it never tests device names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import config, plugin
from .discovery import Registry, registry, short_repr
from .errors import NoBackendError, PluginConflictError, PluginLoadError, TilefuseError
from .policy_check import CheckedPolicy, InvalidAnswer

log = logging.getLogger("tilefuse")

# Factories returned by load(), by backend object (kept alive so that ids stay unique).
_loaded: dict[int, tuple[Any, Callable[[plugin.CompileContext], Any]]] = {}
_policies: dict[int, tuple[Any, CheckedPolicy]] = {}


def availability(backend: Any, reg: Registry | None = None) -> plugin.Availability:
    """``backend.availability()``, checked: a raising or malformed answer marks it broken.

    Never raises; a broken backend reads as unavailable with the reason.
    """
    try:
        answer = backend.availability()
    except Exception as exc:
        reason = f"availability() raised {type(exc).__name__}: {exc}"
    else:
        if isinstance(answer, plugin.Availability):
            return answer
        reason = f"availability() returned {short_repr(answer)}, not a tilefuse.plugin.Availability"
    (reg or registry()).mark_broken(plugin.BACKENDS_GROUP, backend, reason)
    return plugin.Availability.unavailable(reason)


_availability = availability  # the name this module used before; kept for callers


def candidate_backends(device_type: str, reg: Registry | None = None) -> list[Any]:
    """Usable, available backends for ``device_type``, best first.

    Phase one: ``load()`` is not called. Raises ``PluginError`` when a backend named
    in ``TILEFUSE_BACKENDS`` is missing or broken, naming it and the installed ones.
    """
    reg = reg or registry()
    requested = config.requested_backends()
    if requested:
        pool = [reg.get(plugin.BACKENDS_GROUP, name) for name in requested]
    else:
        pool = reg.usable(plugin.BACKENDS_GROUP)
    found = [b for b in pool if device_type in b.info.device_types and availability(b, reg).ok]
    if requested:  # availability() may have just found a requested backend broken
        for b in pool:
            record = reg.record_of(plugin.BACKENDS_GROUP, b)
            if record is not None and not record.usable:
                reg.get(plugin.BACKENDS_GROUP, record.name)  # raises, naming it
    found.sort(key=lambda b: (-b.info.priority, b.info.name))
    return found


def owner(device_type: str, capability: str, reg: Registry | None = None) -> Any:
    """The backend that owns nodes of ``capability`` on ``device_type`` (phase one).

    Raises ``NoBackendError`` with one line saying what is missing. ``load_owner``
    is the same question answered by a backend whose ``load()`` has succeeded.
    """
    candidates = candidate_backends(device_type, reg)
    for b in candidates:
        if capability in b.info.capabilities:
            return b
    raise NoBackendError(no_backend_message(device_type, capability, reg))


def served_device_types(reg: Registry | None = None) -> frozenset[str]:
    """The device types that some available backend serves with pointwise kernels here
    (``TILEFUSE_BACKENDS`` respected; phase one: nothing is loaded)."""
    reg = reg or registry()
    types = {t for b in reg.usable(plugin.BACKENDS_GROUP) for t in b.info.device_types}
    served = set()
    for device_type in types:
        try:
            owner(device_type, plugin.CAP_POINTWISE, reg)
        except TilefuseError:
            continue
        served.add(device_type)
    return frozenset(served)


def declares(device_type: str, capability: str, reg: Registry | None = None) -> bool:
    """Whether an available backend serving ``device_type`` declares ``capability`` (such
    as ``plugin.CAP_CHANNELS_LAST`` or ``plugin.CAP_SPLIT_REDUCTIONS``; phase one: nothing
    is loaded)."""
    try:
        owner(device_type, capability, reg)
    except TilefuseError:
        return False
    return True


def owners_declare(
    device_type: str, capability: str, node_kinds: tuple[str, ...], reg: Registry | None = None
) -> bool:
    """Whether the backend owning each of ``node_kinds`` on ``device_type`` (``owner``)
    declares ``capability`` (an optional op or reduction type their kernels must render,
    such as ``plugin.CAP_RANDOM``); ``False`` where a kind has no owner."""
    try:
        owners = [owner(device_type, kind, reg) for kind in node_kinds]
    except TilefuseError:
        return False
    return all(capability in o.info.capabilities for o in owners)


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
        elif not (av := availability(b, reg)).ok:
            lines.append(f"{r.name} ({av.reason})")
        elif capability not in b.info.capabilities:
            lines.append(f"{r.name} (no {capability} support)")
    seen = "; ".join(lines) if lines else "no backend plugins are installed"
    return (
        f"no backend for device {device_type!r} ({capability}): {seen}. "
        "Install one (e.g. pip install tilefuse-backend-triton) or run `tilefuse backends`."
    )


def load_backend(
    backend: Any, reg: Registry | None = None
) -> Callable[[plugin.CompileContext], Any]:
    """Phase two: ``backend.load()``, once per process, checked.

    Returns the backend's ``KernelScheduling`` factory. When ``load()`` raises or
    returns something that is not callable, the backend is marked broken (logged
    once, with its distribution) and ``PluginLoadError`` names it, the installed
    backends and the fix; later calls raise the same without calling ``load()``.
    """
    reg = reg or registry()
    done = _loaded.get(id(backend))
    if done is not None and done[0] is backend:
        return done[1]
    record = reg.record_of(plugin.BACKENDS_GROUP, backend)
    if record is not None and not record.usable:
        raise PluginLoadError(_load_error(backend, record.reason, reg))
    try:
        factory = backend.load()
    except Exception as exc:
        reason = f"load() raised {type(exc).__name__}: {exc}"
    else:
        if callable(factory):
            _loaded[id(backend)] = (backend, factory)
            return factory
        reason = (
            f"load() returned {short_repr(factory)}, which is not callable (it must return "
            "the factory of its KernelScheduling)"
        )
    reg.mark_broken(plugin.BACKENDS_GROUP, backend, reason)
    raise PluginLoadError(_load_error(backend, reason, reg))


def _load_error(backend: Any, reason: str, reg: Registry) -> str:
    name = backend.info.name
    record = reg.record_of(plugin.BACKENDS_GROUP, backend)
    dist = record.dist if record is not None else "an unknown distribution"
    installed = ", ".join(r.name for r in reg.records(plugin.BACKENDS_GROUP)) or "none"
    package = dist.split()[0] if record is not None else "its distribution"
    return (
        f"backend {name!r} from {dist} failed to load: {reason}. Installed backends: "
        f"{installed}. Reinstall or upgrade {package} (check its toolkit installation), "
        f"or uninstall it (pip uninstall {package}), or leave it out of TILEFUSE_BACKENDS."
    )


def load_owner(
    device_type: str, capability: str, reg: Registry | None = None
) -> tuple[Any, Callable[[plugin.CompileContext], Any]]:
    """Phase two of ``owner``: ``(backend, factory)`` of the best candidate that loads.

    A candidate whose ``load()`` fails is marked broken and the next candidate
    declaring ``capability`` is tried. Raises ``PluginLoadError`` when the failing
    backend was named in ``TILEFUSE_BACKENDS``, and ``NoBackendError`` (saying why
    each backend was passed over) when none is left.
    """
    reg = reg or registry()
    requested = set(config.requested_backends())
    for backend in candidate_backends(device_type, reg):
        if capability not in backend.info.capabilities:
            continue
        try:
            return backend, load_backend(backend, reg)
        except PluginLoadError:
            if backend.info.name in requested:
                raise
            continue  # logged once by mark_broken; the next candidate owns it
    raise NoBackendError(no_backend_message(device_type, capability, reg))


def plugin_versions(
    backend: Any, policy: Any = None, reg: Registry | None = None
) -> tuple[str, ...]:
    """``"distribution version"`` of tilefuse-core, ``backend`` and ``policy`` (a
    ``CheckedPolicy``): what ``CompileContext.plugin_versions`` carries into cache keys."""
    import importlib.metadata as md

    reg = reg or registry()
    try:
        core = f"tilefuse-core {md.version('tilefuse-core')}"
    except md.PackageNotFoundError:
        core = "tilefuse-core (not installed as a distribution)"
    record = reg.record_of(plugin.BACKENDS_GROUP, backend)
    versions = [core, record.dist if record is not None else f"backend {backend.info.name}"]
    if policy is not None:
        versions.append(getattr(policy, "dist", "") or f"policy {policy.name}")
    return tuple(versions)


def active_policy(reg: Registry | None = None) -> CheckedPolicy | None:
    """The scheduling policy named by ``TILEFUSE_POLICY``, validated, or ``None``.

    Returns a ``policy_check.CheckedPolicy``: its ``uuid()`` was asked once and is a
    non-empty str; its ``rank_fusions`` and ``tiling`` answers are checked on every
    call. Raises ``PluginError`` naming the policy and the fix when it is missing,
    broken, or its ``uuid()`` breaks the contract (it is then marked broken).
    """
    name = config.requested_policy()
    if name is None:
        return None
    reg = reg or registry()
    policy = reg.get(plugin.SCHEDULING_GROUP, name)
    cached = _policies.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    record = reg.record_of(plugin.SCHEDULING_GROUP, policy)
    dist = record.dist if record is not None else ""
    try:
        checked = CheckedPolicy.wrap(policy, dist)
    except InvalidAnswer as exc:
        reg.mark_broken(plugin.SCHEDULING_GROUP, policy, str(exc))
        reg.get(plugin.SCHEDULING_GROUP, name)  # raises PluginLoadError, naming it
        raise  # pragma: no cover - reached only for a policy the registry did not find
    _policies[id(policy)] = (policy, checked)
    return checked


def template_selector(reg: Registry | None = None) -> Any:
    """The installed ``plugin.TemplateSelector`` (phase one: discovered and validated), or
    ``None`` when there is none (a broken one is logged once by discovery and skipped).

    Raises ``PluginConflictError`` when several are installed: tilefuse will not pick one
    silently.
    """
    reg = reg or registry()
    found = [r for r in reg.records(plugin.SELECTORS_GROUP) if r.usable]
    if len(found) > 1:
        names = ", ".join(f"{r.name} from {r.dist}" for r in found)
        raise PluginConflictError(
            f"several autotune selectors are installed ({names}); tilefuse will not pick one "
            "silently. Uninstall all but one of these distributions."
        )
    return found[0].obj if found else None
