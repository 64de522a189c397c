"""The entry of the worker zygote, run as ``python -I <this file> SOCKET_FD``.

Isolated mode keeps the user's directory out of ``sys.path`` (see ``_child.py``); the
owner's sanitised ``sys.path`` arrives first on the socket. See ``tilefuse_autotune.zygote``.
"""

from __future__ import annotations

import pickle
import socket
import sys


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    path = sock.recv(1 << 20)
    if not path:
        return  # the owner closed before the zygote started
    sys.path[:] = pickle.loads(path)
    from tilefuse_autotune.zygote import serve

    serve(sock)


if __name__ == "__main__":
    main()
