"""``tilefuse.explain(fn, *inputs)`` and ``tilefuse explain script.py``: what got fused.

Compiles ``fn`` with tilefuse on ``inputs`` (running it once) and returns a text
report per compiled graph: its kernels and the IR nodes fused into each, the
intermediates never allocated, the fusions refused with their reasons, and the
ops that ran as extern (eager) calls.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

import torch


def explain(fn: Any, *inputs: Any) -> str:
    from .report import collect_reports

    torch._dynamo.reset()
    with collect_reports() as reports:
        torch.compile(fn, backend="tilefuse")(*inputs)
    if not reports:
        return "tilefuse compiled no graph (see the warnings above: no backend, or eager fallback)"
    return "\n\n".join(r.format() for r in reports)


def explain_script(path: str, function: str = "fn") -> int:
    """Load ``path``, call ``explain(<function>, *example_inputs())`` and print it."""
    from .errors import TilefuseError

    namespace = runpy.run_path(path)
    if function not in namespace or "example_inputs" not in namespace:
        raise TilefuseError(
            f"{path} must define a function {function!r} and example_inputs() returning its "
            "arguments (choose another function with --function)"
        )
    sys.stdout.write(explain(namespace[function], *namespace["example_inputs"]()) + "\n")
    return 0
