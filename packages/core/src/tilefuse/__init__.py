"""tilefuse: a fusing compiler for PyTorch, used as ``torch.compile(fn, backend="tilefuse")``.

Public API: ``explain(fn, *inputs)`` and the plugin types in ``tilefuse.plugin``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def explain(fn: Any, *inputs: Any) -> str:
    """Compile ``fn`` on ``inputs`` and return the report of kernels, fusions and externs."""
    from .explainer import explain as _explain

    return _explain(fn, *inputs)


__all__ = ["__version__", "explain"]
