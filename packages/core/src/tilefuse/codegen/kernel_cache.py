"""Content-addressed on-disk cache of generated source modules.

A module is stored as ``<root>/<hash[:2]>/<hash>.py`` where ``hash`` covers the
source text and a salt (backend name, policy uuid, versions). Writers hold a
file lock and publish with an atomic rename, so concurrent processes never see
a partial file; a file whose content no longer matches its hash (corrupt) is
rewritten instead of imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from filelock import FileLock

from .. import config
from ..errors import CacheError


def content_hash(source: str, salt: str = "") -> str:
    return hashlib.sha256((salt + "\0" + source).encode()).hexdigest()


def cache_subdir(kind: str) -> Path:
    """``config.cache_dir() / kind``, created; ``CacheError`` naming the fix when it cannot be."""
    root = config.cache_dir() / kind
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the tilefuse cache at {root}: {exc}. "
            "Set TILEFUSE_CACHE_DIR to a writable directory."
        ) from exc
    return root


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def store_source(kind: str, source: str, salt: str = "") -> Path:
    """The cached file holding ``source`` (written if missing or corrupt)."""
    digest = content_hash(source, salt)
    path = cache_subdir(kind) / digest[:2] / f"{digest}.py"
    header = f"# tilefuse {kind} {digest}\n"
    expected = header + source
    if path.exists() and path.read_text() == expected:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path.exists() and path.read_text() == expected):
            atomic_write(path, expected)
    return path


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """Import a cached module by path, as ``name`` (default: from the file name), once per
    process and name."""
    name = name or f"tilefuse_cache_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
