"""The optional remote cache: verified byte values shared through Redis.

``TILEFUSE_REMOTE_CACHE=redis://host:port/db`` (``config.remote_cache_url``) names an existing
Redis server; with it unset every function here is a no-op. The kernel cache
(``codegen.kernel_cache``) and the autotune winners cache consult it on a local miss and
publish to it after a local build or benchmark, so that other processes and machines skip
that work. The ``redis`` client is an optional dependency (``pip install
'tilefuse-core[redis]'``), imported on first use.

Keys are ``tilefuse:v1:<namespace>:<part>:...``: the namespace says what the value is
(``source``, ``artifact``, ``autotune``) and the parts carry everything the local key carries
(cache kind, content key, file name; a winners digest covers op, shapes, dtypes, device,
toolchain and plugin versions and the policy uuid). A value is an envelope::

    tilefuse-remote v1\\n<its key>\\n<sha256 of payload>\\n<payload>

``get`` returns the payload only when the envelope names the key that was asked for, the
payload hashes to the recorded digest and the caller's own ``check`` (e.g. "the source hashes
to its content key") accepts it. Anything else (corrupt, truncated, stored under another key)
is a miss, counted in ``remote_rejected`` and warned about once per process; the caller builds
locally and its ``put`` replaces the bad value.

Never an error: a server that is unreachable, slow (``CONNECT_TIMEOUT_S`` to connect,
``OP_TIMEOUT_S`` per command, no retries), refuses a command, or a URL the client cannot parse,
or a missing ``redis`` package, gives one warning, is counted in ``remote_errors``, and turns
the remote cache off for the rest of the process; tilefuse goes on with its local cache.

Trust: verification catches corruption and mix-ups, not malice. Whoever can write the Redis
server can compute a valid envelope for any key, so the server is trusted for what it stores
under a key it computed, as the local cache directory is trusted to be this user's own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from . import config, counters

log = logging.getLogger("tilefuse")

FORMAT = "v1"
PREFIX = "tilefuse:"
CONNECT_TIMEOUT_S = 0.5
OP_TIMEOUT_S = 1.0
# Values above this are not published (Redis's own limit is 512 MiB; big values would
# cost every reader more than a local build of most kernels).
MAX_VALUE_BYTES = 64 << 20
_MAGIC = f"tilefuse-remote {FORMAT}\n".encode()

_lock = threading.Lock()
_state: dict[str, Any] = {"url": None, "client": None, "off": set(), "warned_rejects": False}


def remote_key(namespace: str, *parts: str) -> str:
    """``tilefuse:v1:<namespace>:<part>:...``, each part percent-encoded (``:`` becomes
    ``%3A``) so that no two part lists share a key; raises ``ValueError`` for an empty part."""
    if not all((namespace, *parts)):
        raise ValueError(f"remote cache key parts must be non-empty: {(namespace, *parts)!r}")
    return PREFIX + ":".join((FORMAT, *(quote(p, safe="") for p in (namespace, *parts))))


def envelope(key: str, payload: bytes) -> bytes:
    """The value stored under ``key`` for ``payload`` (see the module docstring)."""
    digest = hashlib.sha256(payload).hexdigest()
    return b"".join((_MAGIC, key.encode(), b"\n", digest.encode(), b"\n", payload))


def open_envelope(key: str, value: bytes) -> bytes | None:
    """The payload of ``value`` when it is a well-formed envelope for ``key`` whose payload
    hashes to its recorded digest, else ``None``."""
    head = _MAGIC + key.encode() + b"\n"
    if not value.startswith(head):
        return None
    rest = value[len(head) :]
    digest, sep, payload = rest.partition(b"\n")
    if not sep or len(digest) != 64:
        return None
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload


def _redacted(url: str) -> str:
    """``url`` without its password (it goes into warnings)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _give_up(url: str, what: str, exc: BaseException | None) -> None:
    """Turn the remote cache at ``url`` off for this process, with one warning."""
    counters.bump("remote_errors")
    with _lock:
        if url in _state["off"]:
            return
        _state["off"].add(url)
        _state["client"] = None
        _state["url"] = None
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    log.warning(
        "tilefuse: the remote cache TILEFUSE_REMOTE_CACHE=%s %s%s; using the local cache "
        "only for the rest of this process",
        _redacted(url),
        what,
        detail,
    )


def _client() -> tuple[str, Any] | None:
    """``(url, client)`` for the configured server, or ``None`` (unset or turned off)."""
    url = config.remote_cache_url()
    if url is None:
        return None
    with _lock:
        if url in _state["off"]:
            return None
        if _state["url"] == url:
            return url, _state["client"]
    try:
        # An optional dependency (the `redis` extra): mypy may run where it is absent.
        import redis  # type: ignore[import-not-found, unused-ignore]
        from redis.backoff import NoBackoff  # type: ignore[import-not-found, unused-ignore]
        from redis.retry import Retry  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        _give_up(url, "needs the redis package (pip install 'tilefuse-core[redis]')", exc)
        return None
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=OP_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
    except Exception as exc:  # a URL redis cannot use: ValueError, unknown scheme...
        _give_up(url, "is not a URL the redis client accepts", exc)
        return None
    with _lock:
        _state["url"], _state["client"] = url, client
    return url, client


def enabled() -> bool:
    """Whether a remote cache is configured and not turned off in this process."""
    return _client() is not None


def get(namespace: str, *parts: str, check: Callable[[bytes], bool] | None = None) -> bytes | None:
    """The verified payload stored under ``remote_key(namespace, *parts)``, or ``None``.

    ``None`` when no remote cache is configured or it is off, the key is absent (counted in
    ``remote_misses``), or the value fails verification or ``check`` (counted in
    ``remote_misses`` and ``remote_rejected``, one warning per process). A hit counts in
    ``remote_hits``. Never raises for the server's sake (see the module docstring).
    """
    key = remote_key(namespace, *parts)
    found = _client()
    if found is None:
        return None
    url, client = found
    try:
        value = client.get(key)
    except Exception as exc:
        _give_up(url, "cannot be read", exc)
        return None
    if value is None:
        counters.bump("remote_misses")
        return None
    # Not bytes: a client told to decode responses (``?decode_responses=true``), which
    # cannot carry binary payloads: a rejected value, never an error.
    payload = open_envelope(key, value) if isinstance(value, bytes) else None
    if payload is None or (check is not None and not check(payload)):
        _reject(key)
        return None
    counters.bump("remote_hits")
    return payload


def _reject(key: str) -> None:
    counters.bump("remote_misses")
    counters.bump("remote_rejected")
    with _lock:
        warned, _state["warned_rejects"] = _state["warned_rejects"], True
    if not warned:
        log.warning(
            "tilefuse: the remote cache value under %s does not match its key or hash "
            "(corrupt, truncated or written by something else); ignoring it and building "
            "locally (further rejected values are counted in tilefuse.stats()['remote_rejected'])",
            key,
        )


def put(namespace: str, *parts: str, payload: bytes) -> bool:
    """Publish ``payload`` under ``remote_key(namespace, *parts)``; whether it was stored.

    Does nothing (``False``) when no remote cache is configured or it is off, or the payload
    exceeds ``MAX_VALUE_BYTES``. A store counts in ``remote_stores``. Never raises for the
    server's sake.
    """
    key = remote_key(namespace, *parts)
    if len(payload) > MAX_VALUE_BYTES:
        return False
    found = _client()
    if found is None:
        return False
    url, client = found
    try:
        client.set(key, envelope(key, payload))
    except Exception as exc:
        _give_up(url, "cannot be written", exc)
        return False
    counters.bump("remote_stores")
    return True


def reset() -> None:
    """Forget the client, the servers turned off and the warnings given (for tests)."""
    with _lock:
        _state.update(url=None, client=None, off=set(), warned_rejects=False)
