"""tilefuse.lru.BoundedLRU: the bound, the order of eviction and what counts as a use."""

from __future__ import annotations

import pytest

from tilefuse.lru import BoundedLRU


def test_put_drops_the_least_recently_used_and_counts_them():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    assert lru.put("a", 1) == 0 and lru.put("b", 2) == 0
    assert lru.get("a") == 1  # a read makes "a" the most recent: "b" goes next
    assert lru.put("c", 3) == 1
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3
    assert lru.put("c", 4) == 0 and len(lru) == 2 and lru.get("c") == 4
    assert lru.get("missing") is None
    lru.clear()
    assert len(lru) == 0


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        BoundedLRU(0)
