"""Finding plugins through entry points, in two phases.

Phase one (``Registry.records``) loads each entry point's object, which must be
a cheap descriptor, and validates it: API version, expected attributes, unique
name. Nothing here calls ``DeviceBackend.load()``; that is phase two and
happens in ``tilefuse.backend_selection`` when a graph needs the backend.

A broken plugin is logged once with its distribution name and skipped; asking
for it by name raises an error that names it, what is installed, and the fix.
A plugin that passes discovery but later misbehaves (``availability()`` or
``load()`` of a backend, ``uuid()`` of a policy) is refused the same way through
``Registry.mark_broken``, by the code that caught it (``tilefuse.backend_selection``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import plugin
from .errors import PluginConflictError, PluginLoadError, PluginNotFoundError

if sys.version_info >= (3, 12):
    from importlib import metadata as _metadata
else:  # importlib-metadata backports the 3.12 selection API
    try:
        import importlib_metadata as _metadata
    except ImportError:  # pragma: no cover - the dependency is declared
        from importlib import metadata as _metadata  # type: ignore[no-redef]

log = logging.getLogger("tilefuse.plugins")

OK = "ok"
BROKEN = "broken"
REFUSED = "refused"
CONFLICT = "conflict"

_REQUIRED_ATTRS = {
    plugin.BACKENDS_GROUP: ("info", "availability", "load"),
    plugin.SCHEDULING_GROUP: ("name", "api_version", "uuid", "rank_fusions", "tiling"),
    plugin.CHOICES_GROUP: ("name", "api_version", "version", "supports", "choices"),
    plugin.SELECTORS_GROUP: ("name", "api_version", "select"),
}

_GROUP_NOUN = {
    plugin.BACKENDS_GROUP: "backend",
    plugin.SCHEDULING_GROUP: "scheduling policy",
    plugin.CHOICES_GROUP: "choice provider",
    plugin.SELECTORS_GROUP: "autotune selector",
}


@dataclass
class PluginRecord:
    """One entry point as found: what it is, where it came from, and its state."""

    group: str
    name: str
    dist: str
    target: str  # "module:attr" as declared
    status: str = OK
    reason: str = ""
    obj: Any = None

    @property
    def usable(self) -> bool:
        return self.status == OK


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>"
    return f"{dist.metadata['Name']} {dist.version}"


def _api_version_of(group: str, obj: Any) -> Any:
    if group == plugin.BACKENDS_GROUP:
        return getattr(obj.info, "api_version", None)
    return getattr(obj, "api_version", None)


def _declared_name(group: str, obj: Any) -> str:
    if group == plugin.BACKENDS_GROUP:
        return str(obj.info.name)
    return str(obj.name)


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about a plugin's answer."""
    try:
        text = repr(value)
    except Exception:  # a plugin's __repr__ may raise too
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def backend_info_problem(info: Any) -> str | None:
    """What is wrong with a backend's ``info`` (a ``plugin.BackendInfo``), or ``None``."""
    if not isinstance(info, plugin.BackendInfo):
        return f"info is {short_repr(info)}, not a tilefuse.plugin.BackendInfo"
    types = info.device_types
    if not isinstance(types, (tuple, list)) or not all(isinstance(t, str) for t in types):
        return f"info.device_types must be a tuple of str, not {short_repr(types)}"
    caps = info.capabilities
    if not isinstance(caps, (frozenset, set)) or not all(isinstance(c, str) for c in caps):
        return f"info.capabilities must be a frozenset of str, not {short_repr(caps)}"
    if not isinstance(info.priority, int) or isinstance(info.priority, bool):
        return f"info.priority must be an int, not {short_repr(info.priority)}"
    return None


def _validate(record: PluginRecord) -> None:
    obj = record.obj
    missing = [a for a in _REQUIRED_ATTRS[record.group] if not hasattr(obj, a)]
    if missing:
        record.status = REFUSED
        record.reason = (
            f"object {record.target} lacks {', '.join(missing)} required of a "
            f"{_GROUP_NOUN[record.group]} (see tilefuse.plugin)"
        )
        return
    version = _api_version_of(record.group, obj)
    if version != plugin.API_VERSION:
        record.status = REFUSED
        record.reason = (
            f"built for plugin API version {version}, but tilefuse-core speaks version "
            f"{plugin.API_VERSION}; upgrade {record.dist.split()[0]} or tilefuse-core so "
            "that they match"
        )
        return
    if record.group == plugin.BACKENDS_GROUP:
        problem = backend_info_problem(obj.info)
        if problem is not None:
            record.status = REFUSED
            record.reason = problem
            return
    elif not isinstance(getattr(obj, "name", None), str):
        record.status = REFUSED
        record.reason = f"name must be a str, not {short_repr(obj.name)}"
        return
    declared = _declared_name(record.group, obj)
    if declared != record.name:
        record.status = REFUSED
        record.reason = (
            f"entry point is named {record.name!r} but the object calls itself "
            f"{declared!r}; the two must agree"
        )


def _mark_conflicts(records: list[PluginRecord]) -> None:
    by_name: dict[str, list[PluginRecord]] = {}
    for r in records:
        by_name.setdefault(r.name, []).append(r)
    for name, same in by_name.items():
        if len(same) < 2:
            continue
        owners = " and ".join(f"{r.dist} ({r.target})" for r in same)
        for r in same:
            r.status = CONFLICT
            r.reason = (
                f"the name {name!r} is claimed by {owners}; tilefuse will not pick one "
                "silently. Uninstall one of these distributions."
            )


EntryPointSource = Callable[[str], Iterable[Any]]


def _installed_entry_points(group: str) -> Iterable[Any]:
    return _metadata.entry_points(group=group)


class Registry:
    """The installed plugins of every group, read once and cached.

    ``source`` returns the entry points of a group; tests substitute it.
    """

    def __init__(self, source: EntryPointSource | None = None) -> None:
        self._source = source or _installed_entry_points
        self._records: dict[str, list[PluginRecord]] = {}

    def records(self, group: str) -> list[PluginRecord]:
        """Every plugin of ``group``, broken ones included, in a stable order."""
        if group not in self._records:
            self._records[group] = self._scan(group)
        return self._records[group]

    def _scan(self, group: str) -> list[PluginRecord]:
        seen: set[tuple[str, str]] = set()
        records: list[PluginRecord] = []
        for ep in self._source(group):
            dist = _dist_name(ep)
            key = (ep.name, ep.value)
            if key in seen:  # one distribution visible twice on sys.path
                continue
            seen.add(key)
            record = PluginRecord(group, ep.name, dist, ep.value)
            try:
                record.obj = ep.load()
            except Exception as exc:  # a plugin's import error must not stop us
                record.status = BROKEN
                record.reason = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
            else:
                try:
                    _validate(record)
                except Exception as exc:  # e.g. an ``info`` property that raises
                    record.status = BROKEN
                    record.reason = f"reading its descriptor raised {type(exc).__name__}: {exc}"
            records.append(record)
        _mark_conflicts(records)
        for r in records:
            if not r.usable:
                log.warning(
                    "tilefuse: skipping %s %r from %s: %s",
                    _GROUP_NOUN[group],
                    r.name,
                    r.dist,
                    r.reason,
                )
        records.sort(key=lambda r: r.name)
        return records

    def record_of(self, group: str, obj: Any) -> PluginRecord | None:
        """The record whose plugin object is ``obj`` (by identity), or ``None``."""
        for r in self.records(group):
            if r.obj is obj:
                return r
        return None

    def mark_broken(self, group: str, obj: Any, reason: str) -> PluginRecord | None:
        """Refuse ``obj`` from now on: it answered a call in a way the contract forbids.

        The plugin is logged once, with its distribution, and is no longer ``usable``;
        asking for it by name then raises ``PluginLoadError`` with ``reason``. Returns
        its record (``None`` for an object this registry did not discover).
        """
        record = self.record_of(group, obj)
        if record is None:
            key = (group, id(obj), reason)
            if key not in _unrecorded_warned:
                _unrecorded_warned.add(key)
                log.warning(
                    "tilefuse: refusing %s %s: %s", _GROUP_NOUN[group], short_repr(obj), reason
                )
            return None
        if record.status == OK:
            record.status = BROKEN
            record.reason = reason
            log.warning(
                "tilefuse: refusing %s %r from %s: %s",
                _GROUP_NOUN[group],
                record.name,
                record.dist,
                reason,
            )
        return record

    def usable(self, group: str) -> list[Any]:
        """The objects of every plugin in ``group`` that loaded and validated."""
        return [r.obj for r in self.records(group) if r.usable]

    def get(self, group: str, name: str) -> Any:
        """The plugin called ``name``; raises a ``PluginError`` that says how to fix it."""
        noun = _GROUP_NOUN[group]
        records = self.records(group)
        matches = [r for r in records if r.name == name]
        installed = ", ".join(sorted({r.name for r in records})) or "none"
        if not matches:
            raise PluginNotFoundError(
                f"no {noun} named {name!r} is installed (entry-point group {group!r}). "
                f"Installed: {installed}. Install the distribution that provides it, "
                "or remove the name from your tilefuse settings "
                "(TILEFUSE_BACKENDS / TILEFUSE_POLICY)."
            )
        record = matches[0]
        if record.status == CONFLICT:
            raise PluginConflictError(f"{noun} {name!r}: {record.reason}")
        if not record.usable:
            raise PluginLoadError(
                f"{noun} {name!r} from {record.dist} cannot be used: {record.reason}. "
                f"Installed: {installed}. Reinstall or upgrade that distribution, or "
                f"uninstall it (pip uninstall {record.dist.split()[0]}) and stop asking for it."
            )
        return record.obj


_default: Registry | None = None
_unrecorded_warned: set[tuple[str, int, str]] = set()


def registry() -> Registry:
    """The process-wide registry of installed plugins."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def reset_registry(source: EntryPointSource | None = None) -> Registry:
    """Forget cached plugins (after installing one, or in tests) and rescan lazily."""
    global _default
    _default = Registry(source)
    return _default
