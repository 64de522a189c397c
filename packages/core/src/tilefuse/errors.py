"""Errors a user of tilefuse can hit. Each message says what was wrong and what to do."""

from __future__ import annotations


class TilefuseError(Exception):
    """Base class of every error tilefuse raises on purpose."""


class PluginError(TilefuseError):
    """A plugin could not be found, loaded or accepted."""


class PluginNotFoundError(PluginError):
    """A plugin was asked for by name and no installed plugin has that name."""


class PluginLoadError(PluginError):
    """A plugin was asked for by name but failed to import, load or validate."""


class PluginConflictError(PluginError):
    """Two installed plugins claim the same name in the same group."""


class NoBackendError(TilefuseError):
    """No installed, available backend serves a device the graph runs on."""


class Unsupported(TilefuseError):
    """A part of tilefuse or a plugin declines an input it does not handle; ``str()`` says why.

    It is not a failure: the caller takes another path. A lowering that raises it makes
    the node an extern (eager) call; a template that raises it offers no choice for the
    request, and the autotuner picks among the others.
    """


class LoweringError(TilefuseError):
    """An op could not be lowered; the compiler falls back to eager for it."""


class CompileError(TilefuseError):
    """Code generation or kernel compilation failed for a graph."""


class CudaGraphsRefused(TilefuseError):
    """CUDA graphs were asked for (``mode="reduce-overhead"`` or ``cuda_graphs``) and a
    graph cannot use them; raised only in strict mode (otherwise it runs without them)."""


class ChoiceFailed(TilefuseError):
    """An autotune candidate failed to build or run; it is dropped, not fatal."""


class CacheError(TilefuseError):
    """A cache directory is unusable (not writable, not a directory...)."""


class SymbolicUnsupported(TilefuseError):
    """A graph with symbolic sizes cannot be compiled once for every size; ``str()`` says
    which step could not handle a symbol and why.

    It is not a user-facing failure: the graph is then specialized, compiled once per
    concrete input shape as before, and its report says why.
    """
