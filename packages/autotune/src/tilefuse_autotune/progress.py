"""Progress while tuning: a bar on a terminal or in a notebook, else log lines.

Where the bar goes, in order:

* a Jupyter notebook (the default stream, in an IPython kernel, with ``ipywidgets``):
  tqdm's notebook widget;
* a terminal (the stream's ``isatty()``; the default stream is ``sys.stderr``): a tqdm
  bar, or a plain text bar when tqdm is not installed;
* anything else (a pipe, a file, a CI log): one INFO line per candidate on the
  ``tilefuse.autotune`` logger, and no bar.

The bar is removed when the selection ends; its summary line is logged either way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol, TextIO

log = logging.getLogger("tilefuse.autotune")


class _Bar(Protocol):
    def step(self, done: int, text: str) -> None: ...

    def close(self) -> None: ...


class Progress:
    """Reports ``step(label, outcome)`` calls out of ``total``; ``close()`` ends the bar.

    ``stream`` defaults to ``sys.stderr``. Not thread-safe: callers serialise ``step``.
    """

    def __init__(self, title: str, total: int, stream: TextIO | None = None) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self._bar = _open_bar(title, total, stream)

    def step(self, label: str, outcome: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.step(self.done, f"{label}: {outcome}")
        else:
            log.info("%s %d/%d %s: %s", self.title, self.done, self.total, label, outcome)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _open_bar(title: str, total: int, stream: TextIO | None) -> _Bar | None:
    if stream is None and _in_notebook():
        bar = _TqdmBar.notebook(title, total)
        if bar is not None:
            return bar
    out = stream if stream is not None else sys.stderr
    if not bool(getattr(out, "isatty", lambda: False)()):
        return None
    return _TqdmBar.terminal(title, total, out) or _TextBar(title, total, out)


def _in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter), where stderr is no terminal
    but a widget can show a bar."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


class _TqdmBar:
    """A tqdm bar: ``title`` as its description, the latest outcome as its postfix."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    @classmethod
    def terminal(cls, title: str, total: int, stream: TextIO) -> _TqdmBar | None:
        try:
            from tqdm.std import tqdm  # type: ignore[import-untyped]
        except ImportError:
            return None
        # mininterval=0: candidates take seconds each, so every outcome is worth a redraw.
        return cls(
            tqdm(total=total, desc=title, file=stream, leave=False, mininterval=0, unit="candidate")
        )

    @classmethod
    def notebook(cls, title: str, total: int) -> _TqdmBar | None:
        try:
            from tqdm.notebook import tqdm  # type: ignore[import-untyped]

            return cls(tqdm(total=total, desc=title, leave=False, unit="candidate"))
        except Exception:  # no tqdm, or no ipywidgets: tqdm.notebook raises ImportError
            return None

    def step(self, done: int, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class _TextBar:
    """The bar drawn by hand where tqdm is not installed: one line, redrawn in place."""

    WIDTH = 24

    def __init__(self, title: str, total: int, stream: TextIO) -> None:
        self.title = title
        self.total = total
        self.stream = stream
        self.drawn = False

    def step(self, done: int, text: str) -> None:
        filled = self.WIDTH * done // max(1, self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"{self.title} [{bar}] {done}/{self.total} {text}"
        self.stream.write("\r\x1b[K" + line[:160])
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
