"""What ``torch.compile(fn, backend="tilefuse", mode=..., options=...)`` may pass.

``parse(mode, options)`` turns them into per-compile settings for ``config.overrides``
or raises ``TilefuseError`` saying which mode or option was wrong and what is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import config
from .errors import TilefuseError

#: torch.compile modes tilefuse accepts -> the settings they imply.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    # Compiled graphs replayed as CUDA graphs (tilefuse.cuda_graphs).
    "reduce-overhead": {"cuda_graphs": True},
    "max-autotune": {"autotune": "max"},
    "max-autotune-no-cudagraphs": {"autotune": "max"},
}

#: Option name -> (validator, what it accepts). Each mirrors a TILEFUSE_* setting.
OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "strict": (lambda v: isinstance(v, bool), "True or False (as TILEFUSE_STRICT)"),
    "debug_dir": (
        lambda v: isinstance(v, str) and bool(v),
        "a directory path (as TILEFUSE_DEBUG_DIR)",
    ),
    "autotune": (
        lambda v: v in config.AUTOTUNE_MODES,
        f"one of {', '.join(config.AUTOTUNE_MODES)} (as TILEFUSE_AUTOTUNE)",
    ),
    "cpp_wrapper": (
        lambda v: isinstance(v, bool) or v == "auto",
        "True, False or 'auto' (as TILEFUSE_CPP_WRAPPER)",
    ),
    "cuda_graphs": (
        lambda v: isinstance(v, bool),
        "True or False (as TILEFUSE_CUDA_GRAPHS; mode='reduce-overhead' sets it)",
    ),
    "channels_last": (
        lambda v: isinstance(v, bool) or v == "auto",
        "True, False or 'auto' (as TILEFUSE_CHANNELS_LAST)",
    ),
    "split_reductions": (
        lambda v: isinstance(v, bool) or v == "auto",
        "True, False or 'auto' (as TILEFUSE_SPLIT_REDUCTIONS)",
    ),
    "dynamic_sizes": (
        lambda v: isinstance(v, bool),
        "True or False (as TILEFUSE_DYNAMIC_SIZES)",
    ),
    "max_specializations": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "a positive integer (as TILEFUSE_MAX_SPECIALIZATIONS)",
    ),
}


def parse(mode: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-compile settings for ``mode`` and ``options``; ``TilefuseError`` on bad input."""
    settings: dict[str, Any] = {}
    if mode is not None:
        if mode not in MODES:
            raise TilefuseError(
                f"torch.compile(mode={mode!r}) is not a mode tilefuse knows; "
                f"use one of {', '.join(repr(m) for m in MODES)}"
            )
        settings.update(MODES[mode])
    for name, value in (options or {}).items():
        if name not in OPTIONS:
            raise TilefuseError(
                f"torch.compile(options={{{name!r}: ...}}) is not a tilefuse option; "
                f"known options: {', '.join(sorted(OPTIONS))}"
            )
        valid, accepted = OPTIONS[name]
        if not valid(value):
            raise TilefuseError(
                f"torch.compile option {name!r}={value!r} is invalid; it takes {accepted}"
            )
        settings[name] = value
    return settings
