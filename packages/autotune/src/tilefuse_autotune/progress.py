"""Progress while tuning: a bar on a terminal, else log lines (logger ``tilefuse.autotune``)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

log = logging.getLogger("tilefuse.autotune")


class Progress:
    """Reports ``step(label, outcome)`` calls out of ``total``; ``close()`` ends the bar."""

    WIDTH = 24

    def __init__(self, title: str, total: int, stream: TextIO | None = None) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def step(self, label: str, outcome: str) -> None:
        self.done += 1
        if self.tty:
            filled = self.WIDTH * self.done // max(1, self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"{self.title} [{bar}] {self.done}/{self.total} {label}: {outcome}"
            self.stream.write("\r\x1b[K" + text[:160])
            self.stream.flush()
        else:
            log.info("%s %d/%d %s: %s", self.title, self.done, self.total, label, outcome)

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
