"""Progress: a tqdm bar on a terminal (a text bar without tqdm), log lines otherwise."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from tilefuse_autotune.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _two_steps(stream) -> None:
    p = Progress("autotune mm", 4, stream)
    p.step("extern/torch.mm", "0.1 ms")
    p.step("p/c", "crash")
    p.close()


def test_terminal_gets_a_tqdm_bar_and_no_log_lines(caplog):
    pytest.importorskip("tqdm")
    stream = _Terminal()
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        _two_steps(stream)
    text = stream.getvalue()
    assert "autotune mm:  50%|" in text  # tqdm's "desc: pct|bar|" layout
    assert "| 2/4 [" in text and "p/c: crash]" in text
    assert text.rstrip(" ").endswith("\r"), "the bar is erased at close"
    assert caplog.records == []


def test_without_tqdm_the_terminal_gets_a_text_bar(caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm...` raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.std", None)
    stream = _Terminal()
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        _two_steps(stream)
    text = stream.getvalue()
    assert "[############............] 2/4 p/c: crash" in text
    assert text.endswith("\r\x1b[K")
    assert caplog.records == []


def test_pipe_gets_log_lines(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        p = Progress("autotune mm", 2, stream)
        p.step("p/c", "timeout")
        p.close()
    assert [r.getMessage() for r in caplog.records] == ["autotune mm 1/2 p/c: timeout"]
    assert stream.getvalue() == ""


class _FakeNotebookBar:
    """Stands in for ``tqdm.notebook.tqdm`` (a widget needs a live kernel)."""

    made: list[_FakeNotebookBar] = []

    def __init__(self, total, desc, leave, unit) -> None:
        self.total, self.desc, self.n, self.postfix, self.closed = total, desc, 0, "", False
        self.made.append(self)

    def set_postfix_str(self, text, refresh=True) -> None:
        self.postfix = text

    def update(self, n) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def in_a_kernel(monkeypatch):
    """An IPython kernel as tqdm.autonotebook recognises one: ``IPKernelApp`` in its config."""
    kernel = type("Shell", (), {"config": {"IPKernelApp": {}}})()
    ipython = type(sys)("IPython")
    ipython.get_ipython = lambda: kernel
    monkeypatch.setitem(sys.modules, "IPython", ipython)


def test_a_notebook_gets_tqdms_widget(in_a_kernel, monkeypatch, caplog):
    notebook = type(sys)("tqdm.notebook")
    notebook.tqdm = _FakeNotebookBar
    monkeypatch.setitem(sys.modules, "tqdm.notebook", notebook)
    _FakeNotebookBar.made.clear()
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        _two_steps(None)
    [bar] = _FakeNotebookBar.made
    assert (bar.desc, bar.total, bar.n, bar.postfix, bar.closed) == (
        "autotune mm",
        4,
        2,
        "p/c: crash",
        True,
    )
    assert caplog.records == []


def test_a_notebook_without_widgets_gets_log_lines(in_a_kernel, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tqdm.notebook", None)  # as without ipywidgets
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a kernel's stderr is no terminal
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        _two_steps(None)
    assert len(caplog.records) == 2
