"""The entry of a worker process, run as ``python -I <this file> TASK_FD RESULT_FD``.

Isolated mode (``-I``) keeps the working directory, the script's directory, ``PYTHON*``
variables and the user site out of ``sys.path``, so a ``tilefuse_autotune/`` folder where
the user runs never shadows the installed package. Only the standard library is imported
before the parent's (sanitised) ``sys.path`` arrives on the task pipe; the worker loop is
then imported from there. A worker forked by the zygote (``tilefuse_autotune.zygote``)
enters at ``run`` with the same pipes. See ``tilefuse_autotune.worker`` for the protocol.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def run(task_fd: int, result_fd: int) -> None:
    """Read ``sys.path`` from the task pipe, then serve tasks until it closes."""
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    sys.path[:] = tasks.recv()
    from tilefuse_autotune.worker import child_main

    child_main(tasks, results)


def main() -> None:
    run(int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    main()
