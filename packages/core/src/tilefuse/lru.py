"""A bounded least-recently-used map: the one LRU behind every "keep at most N variants
per graph" rule (shape specializations, per-shape CUDA graphs)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """At most ``limit`` (>= 1) entries; ``put`` drops the least recently used (read by
    ``get`` or written by ``put``) beyond that and says how many it dropped.

    Not thread-safe: a caller shared between threads holds its own lock around each call.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an LRU needs a limit of at least 1, not {limit}")
        self.limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> int:
        """Store ``value`` as the most recently used; how many entries were dropped."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        evicted = 0
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
            evicted += 1
        return evicted

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
