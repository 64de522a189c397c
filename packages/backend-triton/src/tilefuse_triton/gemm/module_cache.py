"""Rendered kernel modules on disk: written once by content hash, imported by path.

Triton's ``@jit`` reads a kernel's source through ``inspect``, so a rendered
kernel must live in a real file. Files go to
``tilefuse.config.cache_dir() / "triton_gemm"``, named by the SHA-256 of their
text, and are written atomically (temporary file + ``os.replace``), so
concurrent writers in several processes never expose a partial file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from tilefuse import config
from tilefuse.codegen.kernel_cache import atomic_write
from tilefuse.errors import CacheError

_LOADED: dict[tuple[str, bool], ModuleType] = {}


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
    # ``@triton.jit`` builds an interpreted function when TRITON_INTERPRET=1 at import time
    key = (digest, os.environ.get("TRITON_INTERPRET", "") == "1")
    module = _LOADED.get(key)
    if module is not None:
        return module
    path = write_source(source, stem)
    module_name = f"tilefuse_triton_gemm_{digest[:20]}" + ("_interpreted" if key[1] else "")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    _LOADED[key] = module
    return module
