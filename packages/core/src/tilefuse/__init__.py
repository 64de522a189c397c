"""tilefuse: a fusing compiler for PyTorch, used as ``torch.compile(fn, backend="tilefuse")``.

Public API: ``explain(fn, *inputs)``, ``stats()``, ``reset()`` and the plugin types in
``tilefuse.plugin``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def explain(fn: Any, *inputs: Any) -> str:
    """Compile ``fn`` on ``inputs`` and return the report of kernels, fusions and externs."""
    from .explainer import explain as _explain

    return _explain(fn, *inputs)


def stats() -> dict[str, int]:
    """Counters of this process since start or the last ``reset()``.

    Always holds ``graphs_compiled``, ``graphs_fallen_back``, ``kernels_compiled``,
    ``externs`` and ``templates``; other counters appear once something bumps them.
    """
    from .counters import stats as _stats

    return _stats()


def reset() -> None:
    """Zero ``stats()`` and forget which warnings were already shown.

    Compiled graphs are kept by ``torch.compile``; call ``torch._dynamo.reset()`` too
    to recompile.
    """
    from .codegen.cpp_build import forget_warnings as _forget_cpp_warnings
    from .counters import reset as _reset_counters
    from .dynamo_backend import forget_warnings

    _reset_counters()
    forget_warnings()
    _forget_cpp_warnings()


__all__ = ["__version__", "explain", "reset", "stats"]
