"""Rendered kernel modules on disk: written once by content hash, imported by path.

Triton's ``@jit`` reads a kernel's source through ``inspect``, so a rendered
kernel must live in a real file. Files go to
``tilefuse.config.cache_dir() / "triton_gemm"``, named by the SHA-256 of their
text, and are written atomically (temporary file + ``os.replace``), so
concurrent writers in several processes never expose a partial file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

from tilefuse import config
from tilefuse.codegen import kernel_cache
from tilefuse.codegen.kernel_cache import atomic_write
from tilefuse.errors import CacheError


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def module_dir() -> Path:
    return config.cache_dir() / "triton_gemm"


def write_source(source: str, stem: str) -> Path:
    """Write ``source`` to ``<module_dir>/<stem>_<hash>.py`` unless there already; return the path.

    Raises ``CacheError`` when the directory cannot be created or written.
    """
    directory = module_dir()
    path = directory / f"{stem}_{source_digest(source)[:20]}.py"
    try:
        if path.is_file() and path.read_text() == source:
            return path
        atomic_write(path, source)
    except OSError as error:
        raise CacheError(
            f"cannot write the Triton GEMM kernel cache at {directory}: {error}; "
            "set TILEFUSE_CACHE_DIR to a writable directory"
        ) from error
    return path


def load_module(source: str, stem: str) -> ModuleType:
    """Import the module whose text is ``source`` (writing it first); cached per process."""
    digest = source_digest(source)
    # ``@triton.jit`` builds an interpreted function when TRITON_INTERPRET=1 at import time,
    # so the interpreted and compiled forms are distinct modules.
    interpreted = os.environ.get("TRITON_INTERPRET", "") == "1"
    module_name = f"tilefuse_triton_gemm_{digest[:20]}" + ("_interpreted" if interpreted else "")
    return kernel_cache.load_module(write_source(source, stem), module_name)
