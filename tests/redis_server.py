"""A throwaway ``redis-server`` on a free loopback port, for the remote cache tests.

``running_redis(directory)`` starts one (no persistence, working directory ``directory``),
waits until it answers ``PING`` and yields its ``redis://127.0.0.1:<port>/0`` URL; the server
is stopped on exit. ``skip_reason()`` says why these tests cannot run here, or ``None``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 20.0


def skip_reason() -> str | None:
    if shutil.which("redis-server") is None:
        return (
            "redis-server is not installed (Debian: apt-get install redis-server; "
            ".ci/run installs it)"
        )
    if importlib.util.find_spec("redis") is None:
        return "the redis client is not installed (pip install 'tilefuse-core[redis]')"
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    import redis

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
           "--save", "", "--appendonly", "no", "--protected-mode", "yes"]  # fmt: skip
    log = open(directory / "redis.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # readiness: poll until the server answers, or give up
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (directory / "redis.log").read_text(errors="replace")
                    message = f"redis-server did not start on port {port}:\n{text}"
                    raise RuntimeError(message) from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
