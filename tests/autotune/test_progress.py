"""Progress: a bar on a terminal, log lines otherwise."""

from __future__ import annotations

import io
import logging

from tilefuse_autotune.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_and_no_log_lines(caplog):
    stream = _Terminal()
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        p = Progress("autotune mm", 4, stream)
        p.step("extern/torch.mm", "0.1 ms")
        p.step("p/c", "crash")
        p.close()
    text = stream.getvalue()
    assert "[############............] 2/4 p/c: crash" in text
    assert text.endswith("\r\x1b[K")
    assert caplog.records == []


def test_pipe_gets_log_lines(caplog):
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        p = Progress("autotune mm", 2, io.StringIO())
        p.step("p/c", "timeout")
    assert [r.getMessage() for r in caplog.records] == ["autotune mm 1/2 p/c: timeout"]
