"""Rendered GEMM kernel modules, through the verified cache (``plugin.store_source``).

Triton's ``@jit`` reads a kernel's source through ``inspect``, so a rendered kernel lives in a
cache file (kind ``"triton_gemm"``); the core cache verifies that file's bytes against their
key before executing them and serves the verified text to ``inspect``.
"""

from __future__ import annotations

import re
from types import ModuleType

from tilefuse import plugin

KIND = "triton_gemm"


def load_module(source: str, stem: str) -> ModuleType:
    """The module whose text is ``source`` (stored in the cache first), once per process.

    ``stem`` (the kernel's name) is part of the module's name. Raises ``CacheError`` when the cache
    directory is unusable, or what executing the module raises.
    """
    path = plugin.store_source(KIND, source)
    # ``@triton.jit`` builds an interpreted function when TRITON_INTERPRET is on at import time,
    # so the interpreted and compiled forms are distinct modules.
    interpreted = plugin.triton_interpreted()
    label = re.sub(r"\W", "_", stem)
    module_name = f"tilefuse_triton_gemm_{label}_{path.stem[:20]}"
    module_name += "_interpreted" if interpreted else ""
    return plugin.load_module(path, module_name)
