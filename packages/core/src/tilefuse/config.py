"""Settings, read from the environment at call time so tests and users can change them.

| variable | meaning |
|---|---|
| ``TILEFUSE_BACKENDS`` | comma list of backend names to use; each must be installed |
| ``TILEFUSE_POLICY`` | name of the scheduling policy plugin to activate |
| ``TILEFUSE_DEBUG_DIR`` | write IR, schedule, kernels and wrapper there |
| ``TILEFUSE_CACHE_DIR`` | kernel and autotune cache root (default ``~/.cache/tilefuse``) |
| ``TILEFUSE_REMOTE_CACHE`` | ``redis://host:port/db`` of a shared remote cache (``remote_cache``) |
| ``TILEFUSE_STRICT`` | ``1``/``true``/``yes``/``on``: raise instead of falling back to eager |
| ``TILEFUSE_AUTOTUNE`` | ``off``, ``default``, ``quick``, ``max`` or ``replay`` |
| ``TILEFUSE_MAX_SPECIALIZATIONS`` | shape variants, CUDA graphs too, per graph (LRU, default 16) |
| ``TILEFUSE_DYNAMIC_SIZES`` | ``0``/``off``: compile dynamic-shape graphs per shape (default on) |
| ``TILEFUSE_CPP_WRAPPER`` | ``auto`` (default: built in the background on CUDA) or a boolean |
| ``TILEFUSE_CUDA_GRAPHS`` | ``1``/``true``/``yes``/``on``: replay compiled graphs as CUDA graphs |
| ``TILEFUSE_CHANNELS_LAST`` | ``auto`` (default), on or off: convolution graphs laid out NHWC |
| ``TILEFUSE_SPLIT_REDUCTIONS`` | ``auto`` (default), on or off: few-output reductions in 2 stages |
| ``TRITON_INTERPRET`` | Triton's: kernels run in its CPU interpreter (``triton_interpreted``) |
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

# Settings given to one compile through ``torch.compile(..., options=...)`` or ``mode=``;
# they take precedence over the environment while that graph (and its backward) compiles.
_overrides: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "tilefuse_overrides", default=MappingProxyType({})
)


@contextlib.contextmanager
def overrides(settings: Mapping[str, Any]) -> Iterator[None]:
    """Apply per-compile ``settings`` (keys: ``strict``, ``debug_dir``, ``autotune``,
    ``max_specializations``, ``cpp_wrapper``, ``cuda_graphs``, ``channels_last``,
    ``dynamic_sizes``, ``split_reductions``)."""
    token = _overrides.set({**_overrides.get(), **settings})
    try:
        yield
    finally:
        _overrides.reset(token)


_TRUE = ("1", "true", "yes", "y", "on")
_FALSE = ("", "0", "false", "no", "n", "off")


def env_flag(var: str) -> bool:
    """A boolean environment setting: 1/true/yes/on or 0/false/no/off (any case).

    Anything else raises ``TilefuseError`` naming the variable and the accepted values.
    """
    raw = os.environ.get(var, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    from .errors import TilefuseError

    raise TilefuseError(
        f"{var}={os.environ[var]!r} is not a boolean; use one of 1/true/yes/on or 0/false/no/off"
    )


def _auto_or_flag(var: str) -> str:
    """``"auto"`` (unset or ``auto``), ``"on"`` or ``"off"`` (a boolean, as ``env_flag``)
    from ``var``; anything else raises ``TilefuseError`` naming the variable and every
    accepted value, ``auto`` included."""
    raw = os.environ.get(var, "").strip().lower()
    if raw in ("", "auto"):
        return "auto"
    if raw in _TRUE or raw in _FALSE:
        return "on" if raw in _TRUE else "off"
    from .errors import TilefuseError

    raise TilefuseError(
        f"{var}={os.environ[var]!r} is not a setting; use auto, one of 1/true/yes/on or "
        "one of 0/false/no/off"
    )


# Triton's rule for its boolean settings (``triton.knobs``): these, in any case, mean on;
# anything else (unset, ``0``, ``off``, ``2``, surrounding spaces...) means off.
_TRITON_TRUE = ("1", "true", "on", "yes", "y")


def triton_interpreted() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET``).

    Read with Triton's own rule, so tilefuse and Triton never disagree about it.
    """
    return os.environ.get("TRITON_INTERPRET", "").lower() in _TRITON_TRUE


def _names(var: str) -> tuple[str, ...]:
    raw = os.environ.get(var, "")
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def requested_backends() -> tuple[str, ...]:
    """Backend names the user asked for explicitly (empty: use every installed one)."""
    return _names("TILEFUSE_BACKENDS")


def requested_policy() -> str | None:
    """The scheduling policy the user activated, if any."""
    name = os.environ.get("TILEFUSE_POLICY", "").strip()
    return name or None


def debug_dir() -> Path | None:
    raw = str(_overrides.get().get("debug_dir") or os.environ.get("TILEFUSE_DEBUG_DIR", "")).strip()
    return Path(raw) if raw else None


def cache_dir() -> Path:
    raw = os.environ.get("TILEFUSE_CACHE_DIR", "").strip()
    if raw:
        return Path(raw)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "tilefuse"


def remote_cache_url() -> str | None:
    """The Redis URL of the shared remote cache (``TILEFUSE_REMOTE_CACHE``), or ``None``."""
    raw = os.environ.get("TILEFUSE_REMOTE_CACHE", "").strip()
    return raw or None


def strict() -> bool:
    """Raise instead of falling back to eager (``TILEFUSE_STRICT`` or option ``strict``)."""
    override = _overrides.get().get("strict")
    if override is not None:
        return bool(override)
    return env_flag("TILEFUSE_STRICT")


def cpp_wrapper() -> str:
    """``"auto"``, ``"on"`` or ``"off"``: whether each graph's wrapper is C++ (option
    ``cpp_wrapper``: True, False or ``"auto"``; or ``TILEFUSE_CPP_WRAPPER``: ``auto`` or a
    boolean). ``on`` builds it while the graph compiles; ``auto`` (the default) builds it in
    the background for a CUDA graph, which runs the Python wrapper until it is loaded
    (``codegen.cpp_build``). Raises ``TilefuseError`` naming the variable for any other
    value."""
    override = _overrides.get().get("cpp_wrapper")
    if override is not None:
        return override if isinstance(override, str) else ("on" if override else "off")
    return _auto_or_flag("TILEFUSE_CPP_WRAPPER")


def cuda_graphs() -> bool:
    """Capture each compiled graph into a CUDA graph and replay it (``TILEFUSE_CUDA_GRAPHS``,
    option ``cuda_graphs``, or ``mode="reduce-overhead"``; default off). Raises
    ``TilefuseError`` naming the variable when it is not a boolean."""
    override = _overrides.get().get("cuda_graphs")
    if override is not None:
        return bool(override)
    return env_flag("TILEFUSE_CUDA_GRAPHS")


CHANNELS_LAST_SETTINGS = ("auto", "on", "off")


def channels_last() -> str:
    """``"auto"``, ``"on"`` or ``"off"``: whether graphs with 4-D convolutions are laid out
    channels-last (option ``channels_last``: True, False or ``"auto"``; or
    ``TILEFUSE_CHANNELS_LAST``: ``auto`` or a boolean). ``auto`` (the default) does it
    where a backend declares that the device prefers it (``plugin.CAP_CHANNELS_LAST``);
    ``on`` does it on every device. Raises ``TilefuseError`` naming the variable for any
    other value.
    """
    override = _overrides.get().get("channels_last")
    if override is not None:
        return override if isinstance(override, str) else ("on" if override else "off")
    return _auto_or_flag("TILEFUSE_CHANNELS_LAST")


def split_reductions() -> str:
    """``"auto"``, ``"on"`` or ``"off"``: whether a long reduction with few outputs is
    lowered as two reductions (``frontend.lowerings.split_reduction``; option
    ``split_reductions``: True, False or ``"auto"``; or ``TILEFUSE_SPLIT_REDUCTIONS``:
    ``auto`` or a boolean). ``auto`` (the default) splits where a backend serving the
    device declares ``plugin.CAP_SPLIT_REDUCTIONS``; ``on`` splits on every device (the
    CPU tests use it). Raises ``TilefuseError`` naming the variable for any other value.
    """
    override = _overrides.get().get("split_reductions")
    if override is not None:
        return override if isinstance(override, str) else ("on" if override else "off")
    return _auto_or_flag("TILEFUSE_SPLIT_REDUCTIONS")


def dynamic_sizes() -> bool:
    """Compile a graph with symbolic sizes once for every size (``TILEFUSE_DYNAMIC_SIZES``
    or option ``dynamic_sizes``; default on); off, it is compiled per concrete shape.
    Raises ``TilefuseError`` naming the variable when it is not a boolean."""
    override = _overrides.get().get("dynamic_sizes")
    if override is not None:
        return bool(override)
    if not os.environ.get("TILEFUSE_DYNAMIC_SIZES", "").strip():
        return True
    return env_flag("TILEFUSE_DYNAMIC_SIZES")


AUTOTUNE_MODES = ("off", "default", "quick", "max", "replay")


def autotune_mode() -> str:
    mode = _overrides.get().get("autotune") or os.environ.get("TILEFUSE_AUTOTUNE", "default")
    mode = mode.strip() or "default"
    if mode not in AUTOTUNE_MODES:
        from .errors import TilefuseError

        raise TilefuseError(
            f"TILEFUSE_AUTOTUNE={mode!r} is not a mode; use one of {', '.join(AUTOTUNE_MODES)}"
        )
    return mode


MAX_SPECIALIZATIONS_ENV = "TILEFUSE_MAX_SPECIALIZATIONS"
DEFAULT_MAX_SPECIALIZATIONS = 16


def max_specializations() -> int:
    """How many shape-specialized variants of one symbolic-size graph are kept at once
    (option ``max_specializations`` or ``TILEFUSE_MAX_SPECIALIZATIONS``; default 16).

    Raises ``TilefuseError`` naming the variable when it is set to anything but a
    positive integer.
    """
    override = _overrides.get().get("max_specializations")
    if override is not None:
        return int(override)
    value = positive_int_env(
        MAX_SPECIALIZATIONS_ENV,
        "how many shape-specialized variants of one dynamic-shape graph to keep (e.g. 16)",
    )
    return DEFAULT_MAX_SPECIALIZATIONS if value is None else value


def positive_int_env(name: str, meaning: str) -> int | None:
    """Environment variable ``name`` as a positive integer, ``None`` when unset or empty.

    Raises ``TilefuseError`` naming the variable and saying what to set it to
    (``meaning``, e.g. "how many workers to start") for any other value.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from .errors import TilefuseError

        raise TilefuseError(
            f"{name}={raw!r} is not a positive integer; set it to {meaning}, or unset it"
        )
    return value
