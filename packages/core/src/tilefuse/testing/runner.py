"""``run_conformance(name)``: every API check, then every differential case, against one
installed backend; the engine of ``tilefuse conformance NAME``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from .. import plugin
from ..discovery import registry
from ..errors import PluginNotFoundError, TilefuseError
from .api_checks import Subject, all_api_checks
from .cases import Case, dtype_cases, structural_cases
from .differential import check_supported, run_case
from .report import CaseFailed, CaseResult, CaseSkipped, ConformanceReport, Outcome


def _timed(name: str, body: Callable[[], object]) -> CaseResult:
    start = time.perf_counter()
    try:
        body()
    except CaseFailed as exc:
        outcome, reason = Outcome.FAILED, str(exc)
    except CaseSkipped as exc:
        outcome, reason = Outcome.SKIPPED, str(exc)
    except Exception as exc:  # a bug in the backend surfacing where no check expected it
        outcome, reason = Outcome.FAILED, f"raised {type(exc).__name__}: {exc}"
    else:
        outcome, reason = Outcome.PASSED, ""
    return CaseResult(name, outcome, reason, time.perf_counter() - start)


def _device_present(device_type: str) -> bool:
    import torch

    if device_type == "cpu":
        return True
    module = getattr(torch, device_type, None)
    is_available = getattr(module, "is_available", None)
    try:
        return bool(is_available()) if callable(is_available) else False
    except Exception:  # a torch device module that cannot even answer
        return False


def pick_device(info: plugin.BackendInfo) -> str | None:
    """The first of ``info.device_types`` that has a device in this process, or ``None``."""
    types = info.device_types if isinstance(info.device_types, tuple) else ()
    return next((t for t in types if isinstance(t, str) and _device_present(t)), None)


def _base_dtype(declared: tuple[str, ...]) -> str:
    """float32 when declared, else the first floating dtype declared, else the first."""
    if "float32" in declared:
        return "float32"
    for name in declared:
        try:
            if plugin.dtype_from_name(name).is_floating_point:
                return name
        except ValueError:
            continue
    return declared[0]


def _differential(subject: Subject, cases: list[tuple[Case, str | None]]) -> list[CaseResult]:
    results = []
    info = subject.info
    for case, dtype in cases:

        def body(case: Case = case, dtype: str | None = dtype) -> None:
            subject.made()
            if subject.device_type is None:
                raise CaseSkipped(
                    f"none of its device types ({', '.join(info.device_types)}) has a device "
                    "here (pass device= to run_conformance, or --device, to choose one)"
                )
            declared = subject.dtypes()
            base = dtype or _base_dtype(declared)
            run_in = check_supported(case, base, declared, info.capabilities)
            run_case(case, run_in, info.name, subject.device_type)

        results.append(_timed(case.name, body))
    return results


def run_conformance(
    name: str, *, device: str | None = None, select: str | None = None
) -> ConformanceReport:
    """Run the conformance kit against the installed backend ``name``.

    API checks (descriptor, availability, two-phase load, typed errors, signatures of
    ``plugin.DeviceBackend`` and ``plugin.KernelScheduling``), then differential cases
    against eager: pointwise, broadcasting, type promotion, reductions over each dim,
    fused shapes, odd and zero sizes, and a few cases in each dtype of ``info.dtypes``.
    Each differential case compiles with ``torch.compile(fn, backend="tilefuse")`` with
    ``TILEFUSE_BACKENDS=name`` and ``TILEFUSE_STRICT=1`` set while it runs, and passes only
    when the graph really compiled (``tilefuse.stats()``) and matches eager.

    ``device`` is the torch device type to run on (default: the first of
    ``info.device_types`` present here); ``select`` keeps only the differential cases
    whose name contains it (the API checks always run). Calls ``torch._dynamo.reset()``
    before each differential case.

    Returns a ``ConformanceReport`` (``report.ok``, ``report.failed``...); a backend that
    breaks the contract is reported, not raised. Raises ``PluginNotFoundError`` when no
    backend called ``name`` is installed, and ``TilefuseError`` for a ``device`` that
    the backend does not declare.
    """
    records = [r for r in registry().records(plugin.BACKENDS_GROUP) if r.name == name]
    if not records:
        installed = ", ".join(r.name for r in registry().records(plugin.BACKENDS_GROUP))
        raise PluginNotFoundError(
            f"no backend named {name!r} is installed (entry-point group "
            f"{plugin.BACKENDS_GROUP!r}); installed: {installed or 'none'}. Install the "
            "distribution that provides it (`tilefuse backends` lists what tilefuse sees)."
        )
    subject = Subject(records[0])
    report = ConformanceReport(name, dist=subject.record.dist)
    if subject.record.usable:
        served = subject.info.device_types
        if device is not None and device not in served:
            raise TilefuseError(
                f"backend {name!r} serves {', '.join(served) or 'no device type'}, not "
                f"{device!r}; choose one of those (or leave the device out)"
            )
        subject.device_type = device or pick_device(subject.info)
        report.device = subject.device_type

    def wanted(case_name: str) -> bool:
        return select is None or select in case_name

    for check_name, check in all_api_checks():  # always: the cases build on them
        report.results.append(_timed(check_name, functools.partial(check, subject)))
    cases: list[tuple[Case, str | None]] = [(c, None) for c in structural_cases()]
    if subject.record.usable:
        for dtype in subject.dtypes():
            cases += [(c, dtype) for c in dtype_cases(dtype)]
    report.results += _differential(subject, [(c, d) for c, d in cases if wanted(c.name)])
    return report
