"""Signature conformance: can core call a plugin's method the way the Protocol says?

Checked with ``inspect.signature`` and a trial ``bind``, never ``isinstance``, which
only looks at method names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any


def protocol_methods(protocol: type) -> dict[str, Callable[..., Any]]:
    """The public methods a ``typing.Protocol`` class declares in its own body, by name."""
    return {
        name: member
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def signature_problem(impl: Any, declared: Callable[..., Any]) -> str | None:
    """Why bound method ``impl`` cannot be called as ``declared`` (a Protocol's function,
    ``self`` first) is, or ``None`` when it can.

    Core calls plugin methods positionally, so ``impl`` must accept the declared
    parameters by position, and any further parameter it has must be optional.
    A signature that Python cannot read (a builtin) is not held against it.
    """
    if not callable(impl):
        return f"is {type(impl).__name__}, not a method"
    params = list(inspect.signature(declared).parameters.values())[1:]  # drop self
    try:
        impl_sig = inspect.signature(impl)
    except (TypeError, ValueError):
        return None
    try:
        impl_sig.bind(*(object() for _ in params))
    except TypeError as exc:
        return (
            f"has signature {_plain(impl_sig.parameters.values())}, but core calls it as "
            f"{_plain(params)} ({len(params)} positional argument(s)): {exc}"
        )
    return None


def _plain(params: Iterable[inspect.Parameter]) -> str:
    """``(a, b=1, *args)``: parameters without their annotations."""
    return "(" + ", ".join(str(p.replace(annotation=p.empty)) for p in params) + ")"
