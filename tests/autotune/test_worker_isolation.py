"""Worker processes start isolated: a ``tilefuse_autotune/`` package in the user's working
directory is never imported, yet the installed packages and the parent's ``sys.path`` are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tilefuse_autotune
from tilefuse_autotune.worker import Worker, child_sys_path


def where_am_i(begin) -> dict:
    """A worker task: where the child's package came from, its cwd and its ``sys.path``."""
    import tilefuse_autotune as pkg

    begin()
    return {"file": pkg.__file__, "cwd": os.getcwd(), "path": list(sys.path)}


@pytest.fixture
def evil_cwd(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A working directory holding a malicious ``tilefuse_autotune`` package; it leaves a
    marker file when imported. The parent also has ``""`` (its cwd) on ``sys.path``, as a
    ``python -c`` or REPL session does."""
    marker = tmp_path / "evil_imported"
    package = tmp_path / "work" / "tilefuse_autotune"
    package.mkdir(parents=True)
    code = f"open({str(marker)!r}, 'w').close()\n"
    for name in ("__init__.py", "_child.py", "worker.py"):
        (package / name).write_text(code)
    monkeypatch.chdir(package.parent)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    return package.parent, marker


def test_worker_does_not_import_from_the_working_directory(evil_cwd):
    cwd, marker = evil_cwd
    worker = Worker()
    try:
        seen = worker.call(where_am_i, timeout_s=60)
    finally:
        worker.close()
    assert not marker.exists()
    assert seen["file"] == tilefuse_autotune.__file__
    assert seen["cwd"] != str(cwd) and "" not in seen["path"]
    assert str(cwd) not in seen["path"]


def test_control_plain_python_imports_the_planted_package(evil_cwd):
    """Without isolation, the same directory does shadow the installed package."""
    cwd, marker = evil_cwd
    env = dict(os.environ, PYTHONPATH="")
    subprocess.run([sys.executable, "-c", "import tilefuse_autotune"], cwd=cwd, env=env, check=True)
    assert marker.exists()


def test_child_sys_path_is_absolute_without_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "rel/dir", "/abs/dir"])
    assert child_sys_path() == [str(tmp_path / "rel" / "dir"), "/abs/dir"]


def sleep_for(begin, seconds: float) -> str:
    import time

    begin()
    time.sleep(seconds)
    return "slept"


def test_close_during_a_call_kills_the_child_and_leaves_the_pipes_to_the_caller():
    """A background build's ``call`` may be running when the workers are released: close()
    must neither wait for it nor close the pipes under it (a second close of a descriptor
    the system reused is the ``Bad file descriptor`` a bench run hit)."""
    import threading
    import time

    from tilefuse_autotune.worker import WorkerCrashed

    worker = Worker()
    worker.start()
    outcome: list[BaseException | str] = []

    def busy() -> None:
        try:
            outcome.append(worker.call(sleep_for, 60.0, timeout_s=120))
        except BaseException as error:  # noqa: BLE001 (recorded for the assertion)
            outcome.append(error)

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(1.0)  # the call is under way
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 3.0  # it did not wait for the busy child to exit
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], WorkerCrashed), outcome
    assert worker.call(sleep_for, 0.0, timeout_s=60) == "slept"  # a fresh child serves again
    worker.close()
