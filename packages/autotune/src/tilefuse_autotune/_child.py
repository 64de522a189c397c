"""The entry of a worker process, run as ``python -I <this file> TASK_FD RESULT_FD``.

Isolated mode (``-I``) keeps the working directory, the script's directory, ``PYTHON*``
variables and the user site out of ``sys.path``, so a ``tilefuse_autotune/`` folder where
the user runs never shadows the installed package. Only the standard library is imported
before the parent's (sanitised) ``sys.path`` arrives on the task pipe; the worker loop is
then imported from there. See ``tilefuse_autotune.worker`` for the protocol.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main() -> None:
    tasks = Connection(int(sys.argv[1]), writable=False)
    results = Connection(int(sys.argv[2]), readable=False)
    sys.path[:] = tasks.recv()
    from tilefuse_autotune.worker import child_main

    child_main(tasks, results)


if __name__ == "__main__":
    main()
