"""The on-disk kernel cache: content-addressed entries that are verified every time they are used.

Cached entries are code (Python modules that get executed, shared objects that get loaded), so
every use checks the bytes against the entry's key first, and anything that does not check out
(changed, truncated, non-UTF-8, unreadable, missing its record) is a miss that gets rewritten.

Two kinds of entry, both under ``cache_subdir(kind)``:

* **Source modules** (``store_source`` / ``load_module``): ``<kind>/<key[:2]>/<key>.py`` holding a
  header line ``# tilefuse <kind> <key>`` and the source, where ``key = source_key(kind,
  source)``; a ``salt`` (what else the kernel depends on: the active policy's ``uuid()``)
  enters as a first comment line of the source, ``# tilefuse-salt <sha256 of salt>``.
  ``load_module`` reads the file once, checks those bytes against ``key`` and compiles and
  executes exactly those bytes into a fresh module. It never goes through importlib's file
  loader, so ``__pycache__`` is neither read nor written.
* **Built artifacts** (``build_artifact``): ``<kind>/<key[:2]>/<key>/<filename>`` plus a record
  ``<filename>.sha256`` written (atomically, after the artifact) when the build succeeded.
  The artifact is returned only when its bytes hash to the record.

Directories are created with mode 0o700; the cache root and each kind's directory must be
owned by the current user and not writable by group or others, else ``CacheError``. Writers
hold a file lock per entry and publish with ``os.replace``, so concurrent processes see the
old entry or the whole new one.

With a remote cache configured (``TILEFUSE_REMOTE_CACHE``, see ``tilefuse.remote_cache``):
``store_source`` publishes a source it had to write, and ``load_verified_source`` recovers an
entry that fails its check from the remote copy when that copy hashes to the entry's key;
``build_artifact`` consults the remote cache on a local miss before building (the fetched
bytes are published locally exactly as a build's output is, record included) and publishes
what it built. Only the artifact file travels, not the other files a build leaves in its
entry. The remote cache never makes these functions fail.

Residual window: Triton's interpreter reads a kernel's source through ``linecache`` at its
first launch. ``load_module`` puts the verified text there; a later
``linecache.clearcache()`` by other code makes it read the file again.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from filelock import FileLock

from .. import config, counters, remote_cache
from ..errors import CacheError

DIR_MODE = 0o700
_KEY = re.compile(r"[0-9a-f]{16,128}")
_RECORD_SUFFIX = ".sha256"
_CHUNK = 1 << 20

# Sources this process stored, by path: a tampered entry is rewritten from here.
_stored: dict[Path, str] = {}
_stored_lock = threading.Lock()
_load_lock = threading.RLock()


# ------------------------------------------------------------------ directories


def _unusable(what: str, path: Path, exc: OSError) -> CacheError:
    """The error for a cache path the OS refused (``what``: e.g. "cannot lock the ... entry")."""
    return CacheError(
        f"{what} {path}: {exc}. Set TILEFUSE_CACHE_DIR to a writable directory of your own."
    )


def _check_dir(path: Path) -> None:
    """``CacheError`` unless ``path`` is a directory owned by this user that only it can write."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _unusable("cannot use the tilefuse cache directory", path, exc) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(
            f"the tilefuse cache path {path} is not a directory. "
            "Remove it or set TILEFUSE_CACHE_DIR to a directory of your own."
        )
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and st.st_uid != uid:
        raise CacheError(
            f"the tilefuse cache directory {path} is owned by uid {st.st_uid}, not by you "
            f"(uid {uid}); its kernels would run as you. Set TILEFUSE_CACHE_DIR to a "
            "directory of your own."
        )
    if uid is not None and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"the tilefuse cache directory {path} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):#o}); anyone who can write it could plant code that "
            f"runs as you. Run `chmod go-w {path}` or set TILEFUSE_CACHE_DIR to a directory "
            "of your own."
        )


def _make_dir(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0o700 (``mkdir(parents=True)``
    would give the parents the umask's default mode, e.g. group-writable under 002)."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        for level in reversed(missing):
            level.mkdir(mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise _unusable("cannot create the tilefuse cache directory", path, exc) from exc


def cache_subdir(kind: str) -> Path:
    """``config.cache_dir() / kind``, created (mode 0o700) and checked.

    Raises ``CacheError``, naming the fix, when either directory cannot be created, is owned
    by another user or is writable by group or others.
    """
    if not kind or "/" in kind or kind in (".", ".."):
        raise ValueError(f"cache kind {kind!r} must be a plain directory name")
    root = config.cache_dir()
    _make_dir(root)
    _check_dir(root)
    sub = root / kind
    _make_dir(sub)
    _check_dir(sub)
    return sub


# ------------------------------------------------------------------ files


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` so readers see the old file or the whole
    new one. The file is created with mode 0o600; raises ``OSError`` when it cannot be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes; ``None`` when it is missing or unreadable (a miss, never an error)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock")


# ------------------------------------------------------------------ source modules


def source_key(kind: str, source: str) -> str:
    """The key of a source entry: SHA-256 of the kind and the source text."""
    return hashlib.sha256(f"{kind}\0{source}".encode()).hexdigest()


def _source_entry(kind: str, key: str, source: str) -> bytes:
    return f"# tilefuse {kind} {key}\n{source}".encode()


def _verify_source_entry(path: Path, data: bytes | None) -> str | None:
    """The entry's text (header and source) when ``data`` matches the key named by ``path``
    (``<kind>/<xx>/<key>.py``), else ``None``."""
    if data is None:
        return None
    key, kind = path.stem, path.parent.parent.name
    header = f"# tilefuse {kind} {key}\n".encode()
    if not _KEY.fullmatch(key) or not data.startswith(header):
        return None
    try:
        source = data[len(header) :].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if source_key(kind, source) != key:
        return None
    return header.decode() + source


def store_source(kind: str, source: str, salt: str = "") -> Path:
    """The cache file holding ``source`` under ``kind``, written unless a verified copy is
    there already (a changed, truncated, non-UTF-8 or unreadable entry is rewritten).

    A non-empty ``salt`` (``plugin.CompileContext.cache_salt()``: the active policy's
    ``uuid()``) enters the key, so the same source under another salt is another entry.
    Raises ``CacheError`` when the cache directory is unusable (see ``cache_subdir``).
    """
    if salt:
        source = f"# tilefuse-salt {hashlib.sha256(salt.encode()).hexdigest()}\n{source}"
    key = source_key(kind, source)
    path = cache_subdir(kind) / key[:2] / f"{key}.py"
    with _stored_lock:
        _stored[path] = source
    expected = _source_entry(kind, key, source)
    if _read_bytes(path) != expected:
        _rewrite(path, expected)
        remote_cache.put("source", kind, key, payload=source.encode())
    return path


def _rewrite(path: Path, expected: bytes) -> None:
    _make_dir(path.parent)
    try:
        with _lock(path):
            if _read_bytes(path) != expected:
                atomic_write(path, expected)
    except OSError as exc:
        raise _unusable("cannot write the tilefuse cache entry", path, exc) from exc


def load_verified_source(path: Path) -> str:
    """The text of the source entry at ``path``, read once and checked against its key.

    An entry that does not check out is rewritten from the source this process stored there
    (``store_source``), else from the remote cache's copy when that hashes to the key, and
    that source is returned; when neither has it, ``CacheError`` is raised and nothing from
    the file is used.
    """
    path = Path(path)
    text = _verify_source_entry(path, _read_bytes(path))
    if text is not None:
        return text
    kind, key = path.parent.parent.name, path.stem
    with _stored_lock:
        source = _stored.get(path)
    if source is None and _KEY.fullmatch(key):
        source = _remote_source(kind, key)
    if source is None:
        raise CacheError(
            f"the tilefuse cache entry {path} does not match its key (changed, truncated or "
            "unreadable since it was written); it was not loaded. Delete it to rebuild it."
        )
    expected = _source_entry(kind, key, source)
    _rewrite(path, expected)
    return expected.decode()


def _remote_source(kind: str, key: str) -> str | None:
    """The source the remote cache holds for ``key``, when it hashes to ``key``."""

    def matches(payload: bytes) -> bool:
        try:
            return source_key(kind, payload.decode("utf-8")) == key
        except UnicodeDecodeError:
            return False

    payload = remote_cache.get("source", kind, key, check=matches)
    return payload.decode("utf-8") if payload is not None else None


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """The module executed from the verified text of the source entry at ``path``, as
    ``name`` (default: from the file name), once per process and name.

    The text is compiled from the bytes ``load_verified_source`` checked, under
    ``__file__ = str(path)``; ``linecache`` holds that text, so tracebacks and
    ``inspect.getsource`` (Triton's ``@jit``) see it rather than whatever the file holds later.
    Raises ``CacheError`` (see ``load_verified_source``) or what executing the module raises.
    """
    path = Path(path)
    name = name or f"tilefuse_cache_{path.stem}"
    # Kernels build in a thread pool: one lock, so that no thread sees a module another
    # thread has registered but not finished executing.
    with _load_lock:
        if name in sys.modules:
            return sys.modules[name]
        return _execute(path, name)


def _execute(path: Path, name: str) -> ModuleType:
    text = load_verified_source(path)
    filename = str(path)
    code = compile(text, filename, "exec", dont_inherit=True)
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    module = ModuleType(name)
    module.__file__ = filename
    module.__loader__ = _VerifiedSource(text)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class _VerifiedSource:
    """A module's ``__loader__`` that serves its verified text to ``linecache`` and ``inspect``."""

    def __init__(self, text: str) -> None:
        self._text = text

    def get_source(self, name: str) -> str:
        return self._text


# ------------------------------------------------------------------ built artifacts


def file_sha256(path: Path) -> str | None:
    """SHA-256 of the file's bytes; ``None`` when it is missing or unreadable."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _record(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + _RECORD_SUFFIX)


def verified_artifact(artifact: Path) -> bool:
    """Whether ``artifact`` exists and its bytes hash to the record written when it was built."""
    record = _read_bytes(_record(artifact))
    if record is None:
        return False
    digest = file_sha256(artifact)
    return digest is not None and record.strip() == digest.encode()


def has_artifact(kind: str, key: str, filename: str) -> bool:
    """Whether this machine's cache holds a verified ``filename`` for ``key`` under ``kind``,
    so that ``build_artifact`` would return it without building (cheap; never raises;
    the remote cache is not asked)."""
    if not _KEY.fullmatch(key):
        return False
    try:
        return verified_artifact(cache_subdir(kind) / key[:2] / key / filename)
    except Exception:
        return False


def build_artifact(kind: str, key: str, filename: str, build: Callable[[Path, Path], None]) -> Path:
    """The path of ``filename`` for ``key`` under ``kind``, built unless a verified one is there.

    ``key`` (lowercase hex) must cover everything that determines the artifact. On a miss
    (no artifact, no record, or bytes that do not hash to the record) ``build(entry, out)``
    runs under the entry's lock: ``entry`` is the entry's directory, where it may keep
    inputs and logs, and ``out`` a fresh file in it that the build must write the artifact
    to (same suffix as ``filename``). When ``build`` returns, the artifact is published by
    atomic rename and then its SHA-256 record; when it raises, nothing is published and the
    exception propagates. Raises ``CacheError`` when the cache directory is unusable.

    With a remote cache, a local miss first looks for the artifact under ``(kind, key,
    filename)`` there; verified bytes are published locally instead of building. A build
    that ran counts in ``stats()["artifacts_built"]`` and its artifact is published remotely.
    """
    if not _KEY.fullmatch(key):
        raise ValueError(f"cache key {key!r} must be 16 to 128 lowercase hex digits")
    if not filename or "/" in filename or filename.startswith("."):
        raise ValueError(f"artifact file name {filename!r} must be a plain file name")
    entry = cache_subdir(kind) / key[:2] / key
    artifact = entry / filename
    # The record proves the bytes are the ones built here only if nobody else could
    # have replaced the entry (record included): check every level below the kind's dir.
    _make_dir(entry)
    _check_dir(entry.parent)
    _check_dir(entry)
    if verified_artifact(artifact):
        return artifact
    try:
        lock = FileLock(str(entry / ".lock"))
        lock.acquire()
    except OSError as exc:
        raise _unusable("cannot lock the tilefuse cache entry", entry, exc) from exc
    try:
        if verified_artifact(artifact):  # another process built it while we waited
            return artifact
        fetched = remote_cache.get("artifact", kind, key, filename)
        if fetched is not None:

            def copy(_entry: Path, out: Path) -> None:
                out.write_bytes(fetched)

            _publish(entry, artifact, copy)
            return artifact
        counters.bump("artifacts_built")
        _publish(entry, artifact, build)
        built = _read_bytes(artifact)
        if built is not None:
            remote_cache.put("artifact", kind, key, filename, payload=built)
    finally:
        lock.release()
    return artifact


def _publish(entry: Path, artifact: Path, build: Callable[[Path, Path], None]) -> None:
    fd, tmp_name = tempfile.mkstemp(
        dir=entry, prefix=f".{artifact.name}.", suffix=Path(artifact.name).suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        build(entry, tmp)
        digest = file_sha256(tmp)
        if digest is None:
            raise CacheError(f"the build of {artifact} left no readable output at {tmp}")
        os.replace(tmp, artifact)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        atomic_write(_record(artifact), digest + "\n")
    except OSError as exc:
        raise _unusable("cannot record the hash of", artifact, exc) from exc
