"""Settings, read from the environment at call time so tests and users can change them.

| variable | meaning |
|---|---|
| ``TILEFUSE_BACKENDS`` | comma list of backend names to use; each must be installed |
| ``TILEFUSE_POLICY`` | name of the scheduling policy plugin to activate |
| ``TILEFUSE_DEBUG_DIR`` | write IR, schedule, kernels and wrapper there |
| ``TILEFUSE_CACHE_DIR`` | kernel and autotune cache root (default ``~/.cache/tilefuse``) |
| ``TILEFUSE_STRICT`` | ``1``: raise instead of falling back to eager |
| ``TILEFUSE_AUTOTUNE`` | ``off``, ``default``, ``quick``, ``max`` or ``replay`` |
"""

from __future__ import annotations

import os
from pathlib import Path


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
    raw = os.environ.get("TILEFUSE_DEBUG_DIR", "").strip()
    return Path(raw) if raw else None


def cache_dir() -> Path:
    raw = os.environ.get("TILEFUSE_CACHE_DIR", "").strip()
    if raw:
        return Path(raw)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "tilefuse"


def strict() -> bool:
    return os.environ.get("TILEFUSE_STRICT", "").strip() in ("1", "true", "yes")


AUTOTUNE_MODES = ("off", "default", "quick", "max", "replay")


def autotune_mode() -> str:
    mode = os.environ.get("TILEFUSE_AUTOTUNE", "default").strip() or "default"
    if mode not in AUTOTUNE_MODES:
        from .errors import TilefuseError

        raise TilefuseError(
            f"TILEFUSE_AUTOTUNE={mode!r} is not a mode; use one of {', '.join(AUTOTUNE_MODES)}"
        )
    return mode
