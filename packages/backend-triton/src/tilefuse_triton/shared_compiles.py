"""Triton's compiled kernels, shared between processes through tilefuse's remote cache.

Triton keeps what it compiles (cubin, PTX, IR, metadata) in its own file cache, one directory
per compile hash (``triton.runtime.cache.get_cache_manager``). A process with an empty one,
such as a fresh machine of a cluster, compiles every kernel again even when the remote cache
(``TILEFUSE_REMOTE_CACHE``) already gave it every kernel source and autotune winner.

``shared_compiles(key)`` wraps the code that makes Triton compile one tilefuse kernel (a
``warmup`` or a first launch) in the calling thread:

- before it, the kernel's compiled files published under ``key`` are written into Triton's
  file cache under the hash they were compiled for, so that Triton finds them and compiles
  nothing. Triton still computes its own hash from source, options, target and toolchain:
  when it differs (another Triton, ptxas or GPU), the files are never read and Triton
  compiles as usual. Correctness never rests on ``key``;
- after it, what Triton compiled in the block is published under ``key``, and a small
  index (``INDEX``, in Triton's cache under ``key``) records which compiles ``key`` names,
  so that a later process on this machine whose Triton cache holds them asks the remote
  cache nothing.

Triton's compiles are observed through its compilation listener (``knobs.compilation
.listener``, Triton 3.4+), installed once per process and chained to any listener already
set; it records only inside ``shared_compiles`` blocks of the same thread. Each compile
(a Triton cache miss) counts in ``tilefuse.stats()['triton_compiles']``. Where Triton has no
listener, nothing is shared or counted and kernels compile as before.

The payload is JSON: ``[{"hash", "group", "files": {name: base64}}, ...]``; ``get``'s
envelope verifies its bytes, and ``_valid`` its shape (plain file names, 64-hex hashes)
before anything is written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tilefuse import plugin

log = logging.getLogger("tilefuse")

NAMESPACE = "triton"
COUNTER = "triton_compiles"
INDEX = "tilefuse_shared.json"  # in Triton's cache under a key: the compiles it names
_HASH = re.compile(r"[0-9a-f]{64}")
_local = threading.local()
_install_lock = threading.Lock()
_installed = {"done": False, "ok": False}


def compile_key(source: str, *specialization: Any, device: Any = None) -> str:
    """The remote key of one compile: the kernel source, what the call specializes on
    (argument dtypes, integer values, block sizes, warps), Triton's version and the
    capability of ``device`` (default: the current CUDA device)."""
    import torch
    import triton

    capability = torch.cuda.get_device_capability(device) if torch.cuda.is_available() else None
    text = repr((source, specialization, triton.__version__, torch.version.cuda, capability))
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def shared_compiles(key: str) -> Iterator[None]:
    """Let the Triton compiles this thread runs inside the block come from, and go to, the
    remote cache under ``key`` (see the module docstring). Never raises for the cache's
    sake; what the block raises passes through and publishes nothing."""
    if not _listener_installed():
        yield
        return
    remote = plugin.remote_enabled()
    # Triton's cache already holds what ``key`` names (an index written below): no fetch.
    local = remote and _held_locally(key)
    placed = remote and not local and _place(key)
    records: list[dict[str, Any]] = []
    stack = _stack()
    stack.append(records)
    try:
        yield
    finally:
        stack.pop()
    built = [r for r in records if not r["cache_hit"]]
    if built:
        plugin.bump_counter(COUNTER, len(built))
    if remote and records and not local:
        entries = [_describe(r) for r in records]
        if all(e is not None for e in entries):
            if built or not placed:
                _publish(key, records, entries)
            _write_index(key, entries)


def _stack() -> list[list[dict[str, Any]]]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _listener_installed() -> bool:
    """Install the recording listener once per process; whether Triton has the hook."""
    with _install_lock:
        if not _installed["done"]:
            _installed["done"] = True
            try:
                from triton import knobs

                previous = knobs.compilation.listener
                knobs.compilation.listener = _chained(previous)
                _installed["ok"] = True
            except (ImportError, AttributeError) as error:
                log.debug("tilefuse: Triton has no compilation listener (%s): compiled "
                          "kernels are not shared", error)  # fmt: skip
        return _installed["ok"]


def _chained(previous: Any) -> Any:
    def listener(*, src: Any, metadata: Any, metadata_group: dict[str, str], times: Any,
                 cache_hit: bool) -> None:  # fmt: skip
        stack = getattr(_local, "stack", None)
        if stack:
            stack[-1].append({"metadata": metadata, "group": dict(metadata_group),
                              "cache_hit": cache_hit})  # fmt: skip
        if previous is not None:
            previous(src=src, metadata=metadata, metadata_group=metadata_group, times=times,
                     cache_hit=cache_hit)  # fmt: skip

    return listener


def _describe(record: dict[str, Any]) -> dict[str, str] | None:
    """``{"hash", "group"}`` of a recorded compile: Triton's compile hash and the name of
    its metadata file (the group's name); ``None`` when it has not exactly one of each."""
    metadata = record["metadata"]
    digest = metadata.get("hash") if isinstance(metadata, dict) else None
    groups = [name for name in record["group"] if name.endswith(".json")]
    if not isinstance(digest, str) or not _HASH.fullmatch(digest) or len(groups) != 1:
        log.debug("tilefuse: a Triton compile without one hash and one metadata file: not shared")
        return None
    return {"hash": digest, "group": groups[0]}


def _publish(key: str, records: list[dict[str, Any]], described: list[Any]) -> None:
    entries = []
    for record, entry in zip(records, described, strict=True):
        try:
            files = {name: base64.b64encode(Path(path).read_bytes()).decode()
                     for name, path in record["group"].items()}  # fmt: skip
        except OSError as error:
            log.debug("tilefuse: a Triton cache file went away before it was shared: %s", error)
            return  # publish none rather than part
        entries.append({**entry, "files": files})
    plugin.remote_put(NAMESPACE, key, payload=json.dumps(entries).encode())


def _held_locally(key: str) -> bool:
    """Whether Triton's cache holds every compile the index under ``key`` names."""
    try:
        from triton.runtime.cache import get_cache_manager

        path = get_cache_manager(key).get_file(INDEX)
        if path is None:
            return False
        entries = json.loads(Path(path).read_text())
        return bool(entries) and all(
            _HASH.fullmatch(e["hash"]) and get_cache_manager(e["hash"]).get_group(e["group"])
            for e in entries
        )
    except Exception:  # noqa: BLE001 (an unreadable index is no index)
        return False


def _write_index(key: str, entries: list[dict[str, str]]) -> None:
    """Note in Triton's cache, under ``key``, which compiles ``key`` names, so that a later
    process on this machine finds them without asking the remote cache."""
    try:
        from triton.runtime.cache import get_cache_manager

        get_cache_manager(key).put(json.dumps(entries), INDEX, binary=False)
    except (OSError, RuntimeError) as error:
        log.debug("tilefuse: could not write the shared-compile index: %s", error)


def _valid(payload: bytes) -> bool:
    """Whether ``payload`` is a list of entries this module wrote: hashes of 64 hex digits,
    plain file names, the group among the files, base64 contents."""
    try:
        entries = json.loads(payload)
        if not isinstance(entries, list) or not entries:
            return False
        for entry in entries:
            files = entry["files"]
            group = entry["group"]
            if not (_HASH.fullmatch(entry["hash"]) and group.endswith(".json") and group in files):
                return False
            for name, data in files.items():
                if not _plain_name(name):
                    return False
                base64.b64decode(data, validate=True)
    except Exception:  # noqa: BLE001 (anything malformed, e.g. nesting deep enough to recurse)
        return False
    return True


def _plain_name(name: Any) -> bool:
    """A file name Triton writes: no directories, not hidden, and no group file (those
    name absolute paths; ``_place`` writes its own)."""
    return (isinstance(name, str) and bool(name) and not name.startswith((".", "__grp__"))
            and "/" not in name and "\\" not in name and "\0" not in name)  # fmt: skip


def _place(key: str) -> bool:
    """Write the files published under ``key`` into Triton's cache; whether there were any."""
    payload = plugin.remote_get(NAMESPACE, key, check=_valid)
    if payload is None:
        return False
    try:
        from triton.runtime.cache import get_cache_manager

        for entry in json.loads(payload):
            manager = get_cache_manager(entry["hash"])
            paths = {name: manager.put(base64.b64decode(data), name, binary=True)
                     for name, data in entry["files"].items()}  # fmt: skip
            manager.put_group(entry["group"], paths)
    except (OSError, RuntimeError) as error:  # a cache directory Triton cannot write
        log.warning("tilefuse: could not write a shared Triton kernel into Triton's cache "
                    "(%s); Triton compiles it", error)  # fmt: skip
        return False
    return True
