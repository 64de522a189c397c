"""tilefuse: a fusing compiler for PyTorch, used as ``torch.compile(fn, backend="tilefuse")``.

Public API: ``explain(fn, *inputs)``, ``stats()``, ``reset()``, ``wait_for_builds()`` and
the plugin types in ``tilefuse.plugin``.
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
    from .codegen import cpp_background
    from .codegen.cpp_build import forget_warnings as _forget_cpp_warnings
    from .counters import reset as _reset_counters
    from .dynamo_backend import forget_warnings

    cpp_background.forget()
    _reset_counters()
    forget_warnings()
    _forget_cpp_warnings()


def wait_for_builds(timeout: float | None = None) -> bool:
    """Block until the C++ wrappers being built in the background (option ``cpp_wrapper``,
    ``"auto"`` by default on CUDA) are loaded or have failed, at most ``timeout`` seconds;
    ``True`` when none is left. Until then those graphs run their Python wrapper: call it
    before timing steady-state calls."""
    from .codegen import cpp_background

    return cpp_background.wait(timeout)


__all__ = ["__version__", "explain", "reset", "stats", "wait_for_builds"]
