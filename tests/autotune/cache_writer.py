"""Run as a script: write ``count`` entries tagged ``tag`` into the winners cache at ``path``.

Used by the concurrency test; imports nothing heavy.
"""

from __future__ import annotations

import sys

from tilefuse_autotune.cache import WinnersCache

if __name__ == "__main__":
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = WinnersCache(path)
    for i in range(count):
        cache.put(f"{tag}-{i}", {"provider": tag, "choice": f"c{i}", "mode": "default"})
