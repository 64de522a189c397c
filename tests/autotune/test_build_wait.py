"""Slow builds (nvcc) are waited for only ``TILEFUSE_AUTOTUNE_BUILD_WAIT_S`` seconds.

A build still running when a selection is otherwise done goes on in the background; the
winner found without it is provisional (cached as ``quick``) until a later ``max``
selection measures every candidate. The fake builds wait for a gate file, so the tests
decide when a build ends instead of racing a clock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from tests.autotune.conftest import FAST_LIMITS
from tests.autotune.fake_choices import (
    FastChoice,
    GatedBuildChoice,
    SleepyRecordingChoice,
    mm_problem,
)
from tilefuse import plugin
from tilefuse.errors import TilefuseError
from tilefuse_autotune import Autotuner, settings
from tilefuse_autotune.benchmark import PENDING, Bench, BenchConfig, run_benchmarks
from tilefuse_autotune.extern import ExternChoice
from tilefuse_autotune.measure import Problem
from tilefuse_autotune.progress import Progress

NO_WAIT = replace(FAST_LIMITS, build_wait_s=0.0)


@pytest.fixture(scope="module")
def bench():
    bench = Bench(devices=lambda device: [device])
    yield bench
    bench.close()


def _wait_until(condition, limit_s: float = 60.0) -> None:
    """Poll ``condition`` (a liveness bound, not a timing assertion)."""
    end = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < end, "the background build never finished"
        time.sleep(0.05)


def _builds(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _run(bench, choices, config):
    inputs, layout = mm_problem()
    problem = Problem("mm", inputs, layout, plugin.Epilogue(), 0)
    labels = ["extern/mm", *(c.name for c in choices)]
    return run_benchmarks(
        problem, labels, [ExternChoice("mm", plugin.Epilogue()), *choices], config,
        Progress("t", len(labels)), bench,
    ).outcomes  # fmt: skip


def test_an_unfinished_slow_build_is_pending_and_finishes_in_the_background(bench, tmp_path):
    gate, log = tmp_path / "gate", tmp_path / "builds"
    slow = GatedBuildChoice("cutlass-like", str(gate), str(log))
    outcomes = _run(bench, [FastChoice("triton-like"), slow], NO_WAIT)
    by_label = {o.label: o for o in outcomes}
    assert by_label["triton-like"].ok and by_label["extern/mm"].ok
    assert by_label["cutlass-like"].reason == PENDING
    assert "background" in by_label["cutlass-like"].detail
    assert bench.still_building([slow])
    gate.touch()
    _wait_until(lambda: not bench.still_building([slow]))
    assert _builds(log) == ["cutlass-like"]


def test_a_slow_build_nobody_waits_for_starts_after_the_measurements(bench, tmp_path):
    gate, log = tmp_path / "gate", tmp_path / "events"
    slow = GatedBuildChoice("cutlass-like", str(gate), str(log))
    bench._compile_pool(1)[0].start()  # a warm compile worker: a build could start at once
    threading.Timer(0.05, gate.touch).start()  # and, once started, end at once
    outcomes = _run(bench, [SleepyRecordingChoice("triton-like", str(log)), slow], NO_WAIT)
    assert outcomes[2].reason == PENDING
    _wait_until(lambda: not bench.still_building([slow]))
    lines = log.read_text().splitlines()
    assert lines[-1] == "cutlass-like", lines  # built after every run of the measured choice
    assert sum("triton-like" in line for line in lines) >= 2, lines


def test_a_finished_slow_build_is_measured_and_without_a_limit_every_build_is_waited_for(
    bench, tmp_path
):
    gate, log = tmp_path / "gate", tmp_path / "builds"
    gate.touch()  # builds end at once
    slow = GatedBuildChoice("ready", str(gate), str(log))
    config = replace(FAST_LIMITS, build_wait_s=30.0)
    assert all(o.ok for o in _run(bench, [slow], config))
    late = GatedBuildChoice("late", str(tmp_path / "gate2"), str(log))
    waiter = threading.Timer(0.5, (tmp_path / "gate2").touch)
    waiter.start()
    assert all(o.ok for o in _run(bench, [late], FAST_LIMITS))  # build_wait_s=None: waits
    assert _builds(log) == ["ready", "late"]


def test_a_build_already_running_in_the_background_is_not_started_twice(bench, tmp_path):
    gate, log = tmp_path / "gate", tmp_path / "builds"
    first = GatedBuildChoice("shape-a", str(gate), str(log), key="same-artifact")
    second = GatedBuildChoice("shape-b", str(gate), str(log), key="same-artifact")
    assert _run(bench, [first], NO_WAIT)[1].reason == PENDING
    assert _run(bench, [second], NO_WAIT)[1].reason == PENDING
    gate.touch()
    _wait_until(lambda: not bench.still_building([first, second]))
    time.sleep(0.3)  # room for a wrong second build to show up in the log
    # The second run's choice waited for the first build instead of starting its own, and
    # was given up by then: the one artifact was built once.
    assert _builds(log) == ["shape-a"]


def test_a_provisional_winner_is_reused_while_building_then_max_measures_everything(
    cache, bench, tmp_path, monkeypatch
):
    monkeypatch.setenv(settings.BUILD_WAIT_ENV, "0")
    gate, log = tmp_path / "gate", tmp_path / "builds"
    slow = GatedBuildChoice("ms1-slow", str(gate), str(log))
    tuner = Autotuner(cache=cache, bench_config=FAST_LIMITS, bench=bench)
    inputs, layout = mm_problem()
    choices = [FastChoice("fast"), slow]

    first = tuner.select("mm", choices, inputs, layout, mode="max")
    assert first.source == "benchmark"
    assert first.failures["explicit/ms1-slow"][0] == PENDING
    assert "1 still building" in first.summary
    (entry,) = cache.entries().values()
    assert entry["mode"] == "quick"  # not a full max search: a later max one measures again
    again = tuner.select("mm", choices, inputs, layout, mode="max")
    assert again.source == "cache" and "provisional" in again.summary
    assert again.label == first.label
    quick = tuner.select("mm", choices, inputs, layout, mode="quick")
    assert quick.source == "cache"  # a provisional winner is a quick-mode answer

    gate.touch()
    _wait_until(lambda: not bench.still_building([slow]))
    final = tuner.select("mm", choices, inputs, layout, mode="max")
    assert final.source == "benchmark"
    assert "explicit/ms1-slow" in final.timings_ms  # measured this time
    assert [e["mode"] for e in cache.entries().values()] == ["max"]
    assert tuner.select("mm", choices, inputs, layout, mode="max").source == "cache"


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_build_wait_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(settings.BUILD_WAIT_ENV, value)
    with pytest.raises(TilefuseError, match=settings.BUILD_WAIT_ENV):
        settings.build_wait_s()


def test_the_build_wait_defaults_to_not_waiting(monkeypatch):
    monkeypatch.delenv(settings.BUILD_WAIT_ENV, raising=False)
    assert settings.build_wait_s() == 0.0
    monkeypatch.setenv(settings.BUILD_WAIT_ENV, "600")
    assert settings.build_wait_s() == 600.0
    assert BenchConfig().build_wait_s is None


EXIT_PROGRAM = """
import sys
sys.path[:0] = {path!r}
from dataclasses import replace
from tests.autotune.conftest import FAST_LIMITS
from tests.autotune.fake_choices import FastChoice, GatedBuildChoice, mm_problem
from tilefuse import plugin
from tilefuse_autotune.benchmark import PENDING, Bench, run_benchmarks
from tilefuse_autotune.extern import ExternChoice
from tilefuse_autotune.measure import Problem
from tilefuse_autotune.progress import Progress

bench = Bench(devices=lambda device: [device])
bench.close_at_exit()
inputs, layout = mm_problem()
slow = GatedBuildChoice("never-done", {gate!r}, {log!r})  # its gate never opens
choices = [ExternChoice("mm", plugin.Epilogue()), FastChoice("fast"), slow]
config = replace(FAST_LIMITS, build_wait_s=0.0, compile_timeout_s=300.0)
run = run_benchmarks(Problem("mm", inputs, layout, plugin.Epilogue(), 0),
                     ["extern/mm", "fast", "never-done"], choices, config,
                     Progress("t", 3), bench)
assert run.outcomes[2].reason == PENDING
print("selected", flush=True)
"""


def test_a_process_exits_without_waiting_for_its_background_builds(tmp_path):
    """The build goes on in the background, and stops at exit (``Bench.close_at_exit``):
    the process does not wait out its 300 s build limit, and leaves no process behind
    (no build thread starts a worker once the interpreter exits)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    program = EXIT_PROGRAM.format(path=sys.path, gate=str(tmp_path / "gate"),
                                  log=str(tmp_path / "builds"))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=120)  # liveness: far below the 300 s limit
        assert proc.returncode == 0 and "selected" in out, err[-3000:]
        deadline = time.monotonic() + 30
        while True:  # every process of its group (its workers) is gone soon after it
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "a worker outlived the process"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
