"""Workers forked by the zygote behave as spawned ones: the requester's environment, streams
and isolation, exit statuses that name the signal, and a spawned worker when the zygote is
gone or switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tilefuse_autotune.benchmark import Bench
from tilefuse_autotune.worker import Worker, WorkerCrashed
from tilefuse_autotune.zygote import ENV_SWITCH, ForkedProcess, Zygote

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote forks (POSIX only)")


def report(begin, marker: str) -> dict:
    """A worker task: what the child sees, and one line on its stderr."""
    begin()
    print(f"worker says {marker}", file=sys.stderr, flush=True)
    return {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "setting": os.environ.get("TILEFUSE_TEST_SETTING"),
        "pinned": os.environ.get("TILEFUSE_TEST_PINNED"),
        "torch_preloaded": "torch" in sys.modules,
    }


def abort(begin) -> None:
    begin()
    os.abort()


def _assert_spawned(zygote: Zygote) -> None:
    """A worker asked of ``zygote`` is a fresh interpreter (it imported torch itself)."""
    worker = Worker(zygote=zygote)
    try:
        assert worker.call(report, "spawned", timeout_s=120)["torch_preloaded"] is False
        assert isinstance(worker._proc, subprocess.Popen)
    finally:
        worker.close()


@pytest.fixture
def zygote():
    z = Zygote(env=dict(os.environ), cwd=os.sep)
    assert z.ready(120), "the zygote did not start"
    yield z
    z.close()


def test_a_forked_worker_takes_the_requesters_environment_and_streams(zygote, monkeypatch, capfd):
    monkeypatch.setenv("TILEFUSE_TEST_SETTING", "set after the zygote started")
    worker = Worker({"TILEFUSE_TEST_PINNED": "7"}, zygote)
    try:
        seen = worker.call(report, "hello", timeout_s=60)
        assert isinstance(worker._proc, ForkedProcess)
    finally:
        worker.close()
    assert seen["setting"] == "set after the zygote started"
    assert seen["pinned"] == "7"
    assert seen["cwd"] == os.sep and seen["pid"] != os.getpid()
    assert seen["torch_preloaded"]  # forked after the zygote's imports
    assert "worker says hello" in capfd.readouterr().err


def test_a_forked_worker_that_dies_reports_the_signal_and_is_forked_again(zygote):
    worker = Worker(zygote=zygote)
    try:
        with pytest.raises(WorkerCrashed, match="killed by SIGABRT"):
            worker.call(abort, timeout_s=60)
        first = worker.call(report, "again", timeout_s=60)["pid"]
        worker.kill()
        assert worker.call(report, "and again", timeout_s=60)["pid"] != first
        assert isinstance(worker._proc, ForkedProcess)
    finally:
        worker.close()


def test_without_a_zygote_workers_are_spawned(zygote):
    zygote._proc.kill()  # the zygote dies: the next request finds its socket closed
    zygote._proc.wait()
    _assert_spawned(zygote)


def test_a_closed_zygote_leaves_its_forked_workers_serving(zygote):
    worker = Worker(zygote=zygote)
    try:
        pid = worker.call(report, "before", timeout_s=60)["pid"]
        zygote.close()
        assert worker.call(report, "after", timeout_s=60)["pid"] == pid
    finally:
        worker.close()


def test_the_switch_turns_the_zygote_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    bench = Bench()
    try:
        assert bench.zygote() is None
    finally:
        bench.close()


def test_a_worker_wanting_another_interpreter_setting_is_spawned(zygote, monkeypatch):
    """``TRITON_INTERPRET`` decides at import what ``@triton.jit`` builds: a worker asked for
    with another value than the zygote imported under must import for itself."""
    flipped = "0" if os.environ.get("TRITON_INTERPRET") == "1" else "1"
    monkeypatch.setenv("TRITON_INTERPRET", flipped)
    _assert_spawned(zygote)


def test_released_workers_keep_the_zygote_and_closing_the_bench_stops_it():
    bench = Bench()
    try:
        zygote = bench.zygote()
        assert zygote is not None and zygote.ready(120)
        bench.close(keep_zygote=True)  # what release_workers does
        assert bench.zygote() is zygote and zygote._proc.poll() is None
        bench.close()
        assert zygote._proc is None  # waited for: the zygote exited
    finally:
        bench.close()


def test_a_setting_removed_since_the_zygote_started_is_gone_in_its_workers(monkeypatch):
    monkeypatch.setenv("TILEFUSE_TEST_SETTING", "there when the zygote started")
    z = Zygote(env=dict(os.environ), cwd=os.sep)
    try:
        assert z.ready(120)
        monkeypatch.delenv("TILEFUSE_TEST_SETTING")
        worker = Worker(zygote=z)
        try:
            assert worker.call(report, "unset", timeout_s=60)["setting"] is None
        finally:
            worker.close()
    finally:
        z.close()


def test_closing_a_zygote_that_is_still_starting_stops_it_at_once():
    import time

    z = Zygote(env=dict(os.environ), cwd=os.sep)
    z.start()
    time.sleep(0.2)  # its process runs, importing
    started = time.monotonic()
    z.close()
    assert time.monotonic() - started < 3.0  # not the 5 s wait for a ready one's exit
    assert not z.ready(30)  # and it never becomes ready
