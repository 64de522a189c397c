"""The ``tilefuse`` command line: ``tilefuse backends``, ``tilefuse explain`` and
``tilefuse conformance``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import plugin
from .discovery import PluginRecord, registry


def _describe(record: PluginRecord) -> tuple[str, str]:
    """``(status, detail)`` of one plugin, as the table shows them.

    For a usable plugin this asks what listing shows (a backend's ``availability()``,
    a policy's ``uuid()``). A plugin that breaks its contract there is marked broken
    by the checking code (and logged once), and is then listed as broken with the
    reason; it never stops the listing.
    """
    from . import backend_selection
    from .policy_check import InvalidAnswer, policy_uuid

    status, detail = "ok", ""
    if record.usable and record.group == plugin.BACKENDS_GROUP:
        av = backend_selection.availability(record.obj)
        if av.ok:
            status = "available" + (f" ({av.reason})" if av.reason else "")
        else:
            status = f"unavailable: {av.reason}"
        info = record.obj.info
        caps = ",".join(sorted(info.capabilities))
        devices = ",".join(info.device_types) or "-"
        detail = f"devices={devices} priority={info.priority} caps={caps}"
        if info.description:
            detail += f"\n  {'':<12} {info.description}"
    elif record.usable and record.group == plugin.SCHEDULING_GROUP:
        try:
            detail = f"uuid={policy_uuid(record.obj)}"
        except InvalidAnswer as exc:
            registry().mark_broken(record.group, record.obj, str(exc))
    elif record.usable and hasattr(record.obj, "version"):
        detail = f"version={record.obj.version}"
    if not record.usable:  # broken before, or by the check just made
        return f"{record.status}: {record.reason}", ""
    return status, detail


def format_plugin_table() -> str:
    """A readable table of every plugin group, broken plugins included."""
    reg = registry()
    out = []
    titles = {
        plugin.BACKENDS_GROUP: "Device backends",
        plugin.SCHEDULING_GROUP: "Scheduling policies",
        plugin.CHOICES_GROUP: "Autotune choice providers",
        plugin.SELECTORS_GROUP: "Autotune selector",
    }
    for group in plugin.ENTRY_POINT_GROUPS:
        records = reg.records(group)
        out.append(f"{titles[group]} ({group}):")
        if not records:
            out.append("  (none installed)")
        for r in records:
            status, detail = _describe(r)
            out.append(f"  {r.name:<12} {r.dist:<32} {status}")
            if detail:
                out.append(f"  {'':<12} {detail}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _cmd_backends(args: argparse.Namespace) -> int:
    sys.stdout.write(format_plugin_table())
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explainer import explain_script

    return explain_script(args.script, args.function)


def _cmd_conformance(args: argparse.Namespace) -> int:
    """Exit 0 when every case passed (skips allowed), 1 on any failure; a backend that is
    not installed raises ``PluginNotFoundError`` (exit 2, from ``main``)."""
    from .testing import run_conformance

    report = run_conformance(args.name, device=args.device, select=args.select)
    sys.stdout.write(report.format(verbose=args.verbose))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilefuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list installed plugins and whether each can run here")
    p.set_defaults(func=_cmd_backends)
    p = sub.add_parser(
        "explain",
        help="compile a function from a script and print kernels, fusions and refusals",
    )
    p.add_argument("script", help="a Python file defining the function and an `example_inputs()`")
    p.add_argument("--function", default="fn", help="name of the function to compile (default fn)")
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser(
        "conformance",
        help="run the conformance kit (API checks, differential cases) against a backend",
    )
    p.add_argument("name", help="the installed backend to check (see `tilefuse backends`)")
    p.add_argument("--device", help="torch device type to run on (default: the first it serves)")
    p.add_argument(
        "-k", dest="select", help="run only the differential cases whose name contains this"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    p.set_defaults(func=_cmd_conformance)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        from .errors import TilefuseError

        if isinstance(exc, TilefuseError):
            print(f"tilefuse: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
