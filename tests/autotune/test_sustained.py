"""A measured winner only a little faster than what the default mode runs is compared with
it again, running back to back as in a graph; the loop's answer is the pick."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tests.autotune.conftest import FAST_LIMITS
from tests.autotune.fake_choices import FastChoice, SlowChoice, measure_by_name, mm_problem
from tilefuse_autotune import Autotuner, WinnersCache, benchmark, selection
from tilefuse_autotune.benchmark import Bench
from tilefuse_autotune.timing import sustained_ms


def test_sustained_ms_times_each_function_per_run():
    def sleeper(ms: float):
        return lambda: time.sleep(ms / 1e3)

    short, long = sustained_ms([sleeper(2.0), sleeper(4.0)], "cpu", [2.0, 4.0], rounds=3,
                               segment_ms=20.0)  # fmt: skip
    assert 2.0 <= short < 4.0 and 4.0 <= long < 8.0  # sleep never returns early
    assert long > 1.5 * short


@pytest.fixture(scope="module")
def bench():
    bench = Bench(devices=lambda device: [device])
    yield bench
    bench.close()


@pytest.fixture
def tune(tmp_path, monkeypatch, bench):
    """Select among ``offered`` with timings their names state (extern: 5 ms) and the
    sustained comparison switched on for CPU problems."""
    monkeypatch.setattr(benchmark.measure, "measure", measure_by_name)
    monkeypatch.setattr(selection, "SUSTAINED_DEVICE_TYPES", ("cpu",))
    limits = replace(FAST_LIMITS, timeout_s=120.0)

    def run(*offered):
        tuner = Autotuner(cache=WinnersCache(tmp_path), bench_config=limits, bench=bench)
        inputs, layout = mm_problem()
        return tuner.select("mm", list(offered), inputs, layout, mode="max")

    return run


def test_a_close_winner_that_is_slower_back_to_back_loses_to_the_default_pick(tune):
    # measured 4.8 ms against extern's 5.0 (inside the window), yet ten products a run
    sel = tune(SlowChoice("ms4.8"))
    assert sel.label == "extern/torch.mm", sel.summary
    assert "sustained, explicit/ms4.8" in sel.summary and "took extern/torch.mm" in sel.summary


def test_a_close_winner_that_is_faster_back_to_back_stays(tune):
    sel = tune(FastChoice("ms4.8"))  # repeated runs on the same tensors return at once
    assert sel.label == "explicit/ms4.8", sel.summary
    assert "took explicit/ms4.8" in sel.summary


def test_a_clear_winner_is_not_compared_again(tune):
    sel = tune(SlowChoice("ms1"))  # 5x faster than extern, as measured: outside the window
    assert sel.label == "explicit/ms1"
    assert "sustained" not in sel.summary


def test_what_the_default_mode_runs_is_the_baseline():
    from tilefuse import plugin
    from tilefuse_autotune.selection import Candidate, _default_equivalent

    class Unfused(FastChoice):
        vendor_first = True

    extern, vendor = Candidate("e", "1", FastChoice("mm")), Candidate("e", "1", FastChoice("lt"))
    fused, unfused = Candidate("t", "1", FastChoice("fused")), Candidate("t", "1", Unfused("u"))
    gelu = plugin.Epilogue((plugin.EpilogueStep("gelu_erf"),))
    tuned = [extern, fused, unfused]
    assert _default_equivalent(tuned, extern, None, plugin.Epilogue()) is extern
    assert _default_equivalent(tuned, extern, vendor, gelu) is vendor  # the vendor's epilogue
    assert _default_equivalent(tuned, extern, None, gelu) is unfused  # left unfused
    assert _default_equivalent([extern, fused], extern, None, gelu) is None


def test_a_winner_found_wrong_in_the_sustained_loop_gives_way_to_the_default_pick(tune):
    from tests.autotune.fake_choices import WrongLaterChoice

    sel = tune(WrongLaterChoice("ms4.8"))
    assert sel.label == "extern/torch.mm", sel.summary
    assert "failed (WrongResult" in sel.summary
