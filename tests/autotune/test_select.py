"""select() with real worker processes: failures are dropped and counted, winners cached."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from tests.autotune.fake_choices import (
    BrokenBuildChoice,
    CrashChoice,
    FastChoice,
    HangChoice,
    SlowChoice,
    WrongChoice,
    mm_problem,
)
from tilefuse_autotune import benchmark

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _all_fakes():
    return [
        SlowChoice(),
        CrashChoice(),
        HangChoice(),
        WrongChoice(),
        BrokenBuildChoice(),
        FastChoice(),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_failures_are_dropped_counted_and_summarized(tuner, device, caplog):
    inputs, layout = mm_problem(device=device)
    with caplog.at_level(logging.INFO, logger="tilefuse.autotune"):
        sel = tuner.select("mm", _all_fakes(), inputs, layout, mode="max")

    assert sel.source == "benchmark"
    assert sel.label == "explicit/fast", sel.summary
    assert sel.tried == 7
    assert sel.failed_counts() == {
        "compile error": 1,
        "crash": 1,
        "timeout": 1,
        "wrong result": 1,
    }, sel.failures
    assert sel.failures["explicit/crash"][1] == "killed by SIGABRT"
    assert set(sel.timings_ms) == {"extern/torch.mm", "explicit/slow", "explicit/fast"}
    assert sel.timings_ms["explicit/slow"] > sel.timings_ms["explicit/fast"]
    assert sel.summary.startswith(f"autotune mm [96,96]x[96,96] float32 {device} (max): ")
    assert (
        "tried 7, 4 failed (1 compile error, 1 crash, 1 timeout, 1 wrong result); "
        "won explicit/fast" in sel.summary
    )
    assert "x vs extern" in sel.summary
    fast, extern = sel.timings_ms["explicit/fast"], sel.timings_ms["extern/torch.mm"]
    best = f"; best per provider: explicit/fast {fast:.4f} ms, extern/torch.mm {extern:.4f} ms"
    # With more than one benchmark worker (a 2-GPU machine) the per-worker counts follow.
    assert f"{best}; took " in sel.summary or f"{best}; measured on " in sel.summary
    assert re.search(r"; took [0-9.]+ s \(quick builds done at [0-9.]+ s\)$", sel.summary)
    messages = [r.getMessage() for r in caplog.records]
    assert sel.summary in messages
    # Builds and measurements overlap: candidates finish in no fixed order.
    assert any(re.search(r" [1-7]/7 explicit/crash: crash$", m) for m in messages), "progress"

    # The winner computes the product in this process too.
    a, b = (spec.random() for spec in inputs)
    out = layout.empty()
    sel.choice.compile()
    sel.choice.run(a, b, out=out)
    torch.testing.assert_close(out, a @ b)


def test_second_call_is_a_cache_hit_without_benchmarking(tuner, monkeypatch):
    inputs, layout = mm_problem(64, 32, 48)
    first = tuner.select("mm", [SlowChoice(), FastChoice()], inputs, layout, mode="quick")
    assert first.source == "benchmark" and first.label == "explicit/fast"

    def no_benchmark(*args, **kwargs):
        raise AssertionError("a cache hit must not benchmark")

    monkeypatch.setattr(benchmark, "run_benchmarks", no_benchmark)
    fresh = [SlowChoice(), FastChoice()]
    second = tuner.select("mm", fresh, inputs, layout, mode="quick")
    assert second.source == "cache"
    assert second.choice is fresh[1], "a hit returns the re-created choice of that name"
    assert "cached winner explicit/fast" in second.summary
    entry = next(iter(tuner.cache.entries().values()))
    assert (entry["provider"], entry["choice"], entry["mode"]) == ("explicit", "fast", "quick")
