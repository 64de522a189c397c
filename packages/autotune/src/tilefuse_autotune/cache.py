"""The persistent winners cache: one JSON file, safe for concurrent processes.

Layout: ``<cache_dir>/autotune/winners.json`` maps a key digest to an entry
``{"provider", "choice", "mode", "time_ms", "extern_ms", "key"}``. Writers take
``winners.json.lock`` (filelock), re-read the file, add their entry and replace
the file atomically (temporary file in the same directory, ``os.replace``), so a
reader without the lock sees either the old or the new file, never a torn one.
A corrupt file or entry is ignored (and logged) and rewritten by the next writer.

Shared winners: with ``TILEFUSE_REMOTE_CACHE`` set (``tilefuse.remote_cache``), ``put(...,
share=True)`` also publishes a benchmarked winner under ``tilefuse:v1:autotune:<digest>``
and ``get_shared`` looks one up, taking it only when its key fields hash to the digest asked
for, and keeps it in the local file. Check verdicts stay local: they say what ran correctly
on this machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from filelock import FileLock

from tilefuse import config, plugin, remote_cache
from tilefuse.errors import CacheError

log = logging.getLogger("tilefuse.autotune")

FORMAT = 1
_ENTRY_FIELDS = {"provider": str, "choice": str, "mode": str}


def key_digest(fields: dict[str, Any]) -> str:
    """A stable digest of the key ``fields`` (JSON with sorted keys)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _valid_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(f), t) for f, t in _ENTRY_FIELDS.items()
    )


def _parse(payload: bytes) -> dict[str, Any] | None:
    """A shared entry: valid, with its key fields (``None`` for anything else)."""
    try:
        entry = json.loads(payload)
    except ValueError:
        return None
    if not _valid_entry(entry) or not isinstance(entry.get("key"), dict):
        return None
    return dict(entry)


class WinnersCache:
    """Winners by key digest, in ``directory`` (default ``config.cache_dir() / "autotune"``)."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory else config.cache_dir() / "autotune"
        self.path = self.directory / "winners.json"
        self._lock_path = self.directory / "winners.json.lock"

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("tilefuse: cannot read autotune cache %s (%s); ignoring it", self.path, exc)
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("tilefuse: autotune cache %s is corrupt; ignoring it", self.path)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            log.warning("tilefuse: autotune cache %s has an unknown format; ignoring it", self.path)
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, digest: str) -> dict[str, Any] | None:
        """The entry stored under ``digest``, or ``None`` (absent or corrupt)."""
        entry = self._read().get(digest)
        if entry is None:
            return None
        if not _valid_entry(entry):
            log.warning("tilefuse: ignoring a corrupt autotune cache entry %s", digest[:12])
            return None
        return dict(entry)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every valid entry."""
        return {k: v for k, v in self._read().items() if _valid_entry(v)}

    def get_shared(self, digest: str) -> dict[str, Any] | None:
        """The entry the remote cache holds under ``digest``, or ``None`` (no remote cache,
        absent, unreachable, or not an entry whose ``key`` fields hash to ``digest``).

        A hit is also stored locally; raises ``CacheError`` only as ``put`` does."""

        def matches(payload: bytes) -> bool:
            entry = _parse(payload)
            return entry is not None and key_digest(entry["key"]) == digest

        payload = remote_cache.get("autotune", digest, check=matches)
        if payload is None:
            return None
        entry = _parse(payload)
        assert entry is not None  # checked by ``matches``
        self.put(digest, entry)
        return entry

    def put(self, digest: str, entry: dict[str, Any], *, share: bool = False) -> None:
        """Store ``entry`` under ``digest``, and with ``share`` publish it to the remote cache
        (when one is configured; that never fails). Raises ``CacheError`` if the directory
        is unusable."""
        if not _valid_entry(entry):
            raise ValueError(f"an autotune cache entry needs {sorted(_ENTRY_FIELDS)}: {entry}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self._lock_path)):
                entries = {k: v for k, v in self._read().items() if _valid_entry(v)}
                entries[digest] = entry
                self._write({"format": FORMAT, "entries": entries})
        except OSError as exc:
            raise CacheError(
                f"cannot write the autotune cache in {self.directory}: {exc}. "
                "Point TILEFUSE_CACHE_DIR at a writable directory."
            ) from exc
        if share and isinstance(entry.get("key"), dict):
            text = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            remote_cache.put("autotune", digest, payload=text.encode())

    def _write(self, data: dict[str, Any]) -> None:
        plugin.atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True))
