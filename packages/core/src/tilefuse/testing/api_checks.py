"""API checks of a backend plugin: descriptor, availability, two-phase load, signatures
and typed errors. Each check raises ``CaseFailed``/``CaseSkipped`` or returns on a pass.

The checks run in order on one ``Subject``, which each fills in for the next: a check
whose prerequisite failed skips, saying which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import backend_selection, plugin
from ..discovery import PluginRecord, Registry, short_repr
from ..errors import NoBackendError, PluginLoadError, TilefuseError
from .report import CaseFailed, CaseSkipped
from .settings import environment
from .signatures import protocol_methods, signature_problem

KNOWN_CAPABILITIES = frozenset(
    value for key, value in vars(plugin).items() if key.startswith("CAP_")
)


@dataclass
class Subject:
    """The backend under test and what the checks learned about it so far."""

    record: PluginRecord
    device_type: str | None = None  # where differential cases run
    availability: plugin.Availability | None = None
    factory: Callable[[plugin.CompileContext], Any] | None = None
    scheduling: Any = None

    @property
    def backend(self) -> Any:
        return self.record.obj

    @property
    def info(self) -> plugin.BackendInfo:
        return self.record.obj.info

    def dtypes(self) -> tuple[str, ...]:
        return tuple(getattr(self.info, "dtypes", plugin.DEFAULT_DTYPES))

    # Each accessor below returns what an earlier check established, or skips the
    # calling check (``CaseSkipped``) saying which prerequisite is missing.

    def described(self) -> plugin.BackendInfo:
        if not self.record.usable:
            raise CaseSkipped(f"its descriptor was refused ({self.record.reason})")
        return self.info

    def answered(self) -> plugin.Availability:
        self.described()
        if self.availability is None:
            raise CaseSkipped("availability() did not answer")
        return self.availability

    def available(self) -> plugin.Availability:
        answer = self.answered()
        if not answer.ok:
            raise CaseSkipped(f"the backend is unavailable here: {answer.reason}")
        return answer

    def loaded(self) -> Callable[[plugin.CompileContext], Any]:
        self.available()
        if self.factory is None:
            raise CaseSkipped("load() did not return a factory")
        return self.factory

    def made(self) -> Any:
        self.loaded()
        if self.scheduling is None:
            raise CaseSkipped("no KernelScheduling was made (see the load checks)")
        return self.scheduling


def check_discovered(s: Subject) -> None:
    """Discovery accepted the entry point (import, API version, descriptor, unique name)."""
    if not s.record.usable:
        raise CaseFailed(f"{s.record.status}: {s.record.reason}")


def check_api_version(s: Subject) -> None:
    s.described()
    if s.info.api_version != plugin.API_VERSION:
        raise CaseFailed(
            f"info.api_version is {s.info.api_version!r}; tilefuse-core speaks {plugin.API_VERSION}"
        )


def check_device_types(s: Subject) -> None:
    s.described()
    types = s.info.device_types
    if not isinstance(types, tuple) or not types:
        raise CaseFailed(f"info.device_types must be a non-empty tuple, not {short_repr(types)}")
    bad = [t for t in types if not isinstance(t, str) or not t]
    if bad:
        raise CaseFailed(f"info.device_types holds {short_repr(bad)}: torch device types only")


def check_capabilities(s: Subject) -> None:
    s.described()
    caps = s.info.capabilities
    if not isinstance(caps, frozenset) or not caps:
        raise CaseFailed(f"info.capabilities must be a non-empty frozenset, not {short_repr(caps)}")
    unknown = sorted(str(c) for c in caps - KNOWN_CAPABILITIES)
    if unknown:
        raise CaseFailed(
            f"info.capabilities has unknown {', '.join(unknown)}; known: "
            f"{', '.join(sorted(KNOWN_CAPABILITIES))} (the plugin.CAP_* constants)"
        )


def check_dtypes(s: Subject) -> None:
    s.described()
    names = s.dtypes()
    if not names:
        raise CaseFailed("info.dtypes is empty: declare the dtypes the kernels serve")
    for name in names:
        try:
            plugin.dtype_from_name(name)
        except (TypeError, ValueError):
            raise CaseFailed(
                f"info.dtypes holds {short_repr(name)}, not a torch dtype name "
                "(write them as plugin.dtype_name does: 'float32', 'bfloat16')"
            ) from None


def check_backend_signatures(s: Subject) -> None:
    """``availability()`` and ``load()`` can be called as ``plugin.DeviceBackend`` says."""
    s.described()
    problems = []
    for name, declared in protocol_methods(plugin.DeviceBackend).items():
        problem = signature_problem(getattr(s.backend, name, None), declared)
        if problem:
            problems.append(f"{name}() {problem}")
    if problems:
        raise CaseFailed("; ".join(problems))


def check_availability(s: Subject) -> None:
    """``availability()`` returns a ``plugin.Availability``, never raises, and gives a
    reason when not ok."""
    s.described()
    try:
        answer = s.backend.availability()
    except Exception as exc:
        raise CaseFailed(f"availability() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(answer, plugin.Availability):
        raise CaseFailed(f"availability() returned {short_repr(answer)}, not plugin.Availability")
    if not answer.ok and not answer.reason.strip():
        raise CaseFailed("availability() says not ok without a reason")
    s.availability = answer


def check_load(s: Subject) -> None:
    """Phase two: ``load()`` returns a callable factory (through core's checked path, so
    it runs at most once per process); a failure is a typed ``PluginLoadError``."""
    s.available()
    try:
        s.factory = backend_selection.load_backend(s.backend)
    except PluginLoadError as exc:
        raise CaseFailed(str(exc)) from None
    except Exception as exc:
        raise CaseFailed(
            f"loading raised {type(exc).__name__} instead of PluginLoadError: {exc}"
        ) from None


def check_factory(s: Subject) -> None:
    """``factory(plugin.CompileContext(...))`` returns a scheduling object."""
    factory = s.loaded()
    device = s.device_type or s.info.device_types[0]
    context = plugin.CompileContext(device=device, policy=None)
    try:
        scheduling = factory(context)
    except Exception as exc:
        raise CaseFailed(
            f"factory(CompileContext(device={device!r})) raised {type(exc).__name__}: {exc}"
        ) from None
    if scheduling is None:
        raise CaseFailed("factory(CompileContext(...)) returned None")
    s.scheduling = scheduling


def scheduling_method_checks() -> Iterator[tuple[str, Callable[[Subject], None]]]:
    """One check per method of ``plugin.KernelScheduling``: present, callable, and
    callable with the declared parameters."""
    for name, declared in protocol_methods(plugin.KernelScheduling).items():

        def check(s: Subject, name: str = name, declared: Any = declared) -> None:
            scheduling = s.made()
            impl = getattr(scheduling, name, None)
            if impl is None:
                raise CaseFailed(
                    f"{type(scheduling).__name__} has no {name}(), which "
                    "plugin.KernelScheduling declares"
                )
            problem = signature_problem(impl, declared)
            if problem:
                raise CaseFailed(f"{name}() {problem}")

        yield f"KernelScheduling.{name}", check


class _EntryPoint:
    """An entry point for a private ``Registry``: what discovery reads of one."""

    def __init__(self, name: str, obj: Any) -> None:
        self.name = name
        self.value = f"tilefuse.testing:{name}"
        self.dist = None
        self._obj = obj

    def load(self) -> Any:
        return self._obj


class _Unavailable:
    """The backend's descriptor with an availability that says no and a load that must
    not be reached."""

    REASON = "conformance kit: simulated missing toolkit"

    def __init__(self, info: plugin.BackendInfo) -> None:
        self.info = info

    def availability(self) -> plugin.Availability:
        return plugin.Availability.unavailable(self.REASON)

    def load(self) -> Any:
        raise AssertionError("load() of an unavailable backend was called")


def check_unavailable_is_typed(s: Subject) -> None:
    """Asked for by name (``TILEFUSE_BACKENDS``) while unavailable, the backend is
    refused with ``NoBackendError`` carrying its availability reason, and never loaded.

    Where the backend is available here, its descriptor is checked the same way with an
    availability that says no, in a private registry.
    """
    answer = s.answered()
    name = s.info.name
    if not s.info.device_types or not s.info.capabilities:
        raise CaseSkipped("the descriptor declares no device type or no capability")
    reg: Registry | None = None
    if answer.ok:
        reason = _Unavailable.REASON
        proxy = _Unavailable(s.info)
        reg = Registry(lambda group: [_EntryPoint(name, proxy)] if group == s.record.group else [])
    else:
        reason = answer.reason
    device_type = s.info.device_types[0]
    capability = sorted(s.info.capabilities)[0]
    with environment(TILEFUSE_BACKENDS=name):
        try:
            backend_selection.load_owner(device_type, capability, reg)
        except NoBackendError as exc:
            if reason not in str(exc):
                raise CaseFailed(
                    f"NoBackendError does not give the reason {reason!r}: {exc}"
                ) from None
            return
        except TilefuseError as exc:
            raise CaseFailed(
                f"refused with {type(exc).__name__}, not NoBackendError: {exc}"
            ) from None
        except Exception as exc:
            raise CaseFailed(f"raised {type(exc).__name__}, not a TilefuseError: {exc}") from None
    raise CaseFailed(f"an unavailable {name!r} was chosen to own {capability} on {device_type}")


API_CHECKS: tuple[tuple[str, Callable[[Subject], None]], ...] = (
    ("descriptor: discovered", check_discovered),
    ("descriptor: api_version", check_api_version),
    ("descriptor: device_types", check_device_types),
    ("descriptor: capabilities", check_capabilities),
    ("descriptor: dtypes", check_dtypes),
    ("signature: DeviceBackend", check_backend_signatures),
    ("availability: answers, never raises", check_availability),
    ("typed errors: unavailable backend", check_unavailable_is_typed),
    ("load: returns a factory", check_load),
    ("load: factory(CompileContext) makes a scheduling", check_factory),
)


def all_api_checks() -> list[tuple[str, Callable[[Subject], None]]]:
    """Every API check in the order they run: ``(name, check)``."""
    methods = [(f"signature: {name}", check) for name, check in scheduling_method_checks()]
    return [*API_CHECKS, *methods]
