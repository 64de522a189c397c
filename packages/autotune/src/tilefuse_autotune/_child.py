"""``python -m tilefuse_autotune._child``: the entry of a worker process (see ``worker``)."""

from __future__ import annotations

import sys

from tilefuse_autotune.worker import child_main

if __name__ == "__main__":
    child_main(int(sys.argv[1]), int(sys.argv[2]))
