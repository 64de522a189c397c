"""Default mode runs no unmeasured third-party code (``tilefuse_autotune.trust``).

The fake providers here live in the test tree, not in a tilefuse distribution, so
they are third party. Their choices run only inside isolated worker processes: a
choice that zeroes its output or segfaults is refused there, and the test process
lives on.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata

import pytest

from tests.autotune.fake_choices import (
    CrashChoice,
    FakeProvider,
    ReluChoice,
    SegfaultChoice,
    ZeroChoice,
    mm_problem,
)
from tilefuse import plugin
from tilefuse_autotune import benchmark, candidates_for
from tilefuse_autotune.keys import cache_key_fields
from tilefuse_autotune.trust import CheckRecords, is_first_party

RELU = plugin.Epilogue((plugin.EpilogueStep("relu"),))


def _third_party(*choices, name="vendor"):
    inputs, layout = mm_problem(m=32, k=24, n=16)
    offered = candidates_for("mm", inputs, layout, RELU, [FakeProvider(name, list(choices))])
    return offered, inputs, layout


@pytest.fixture
def no_checks(monkeypatch):
    """Fails the test if a selection runs any correctness check."""

    def refuse(*args, **kwargs):
        raise AssertionError("no check was expected here")

    monkeypatch.setattr(benchmark, "check_candidates", refuse)


def test_providers_outside_tilefuse_distributions_are_third_party():
    offered, _, _ = _third_party(ReluChoice())
    assert [c.first_party for c in offered] == [False]
    assert not is_first_party(FakeProvider("vendor", []))
    triton = pytest.importorskip("tilefuse_triton.gemm.provider")
    try:
        metadata.distribution("tilefuse-backend-triton")
    except metadata.PackageNotFoundError:
        pytest.skip("tilefuse-backend-triton is importable but not installed")
    assert is_first_party(triton.PROVIDER)


def test_toy_plugin_distribution_is_third_party():
    toy = pytest.importorskip("tilefuse_toy.choices")
    assert not is_first_party(toy.PROVIDER)


def test_off_mode_never_runs_third_party_code(tuner, no_checks):
    offered, inputs, layout = _third_party(ZeroChoice())
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="off")
    assert (sel.label, sel.source) == ("extern/torch.mm", "heuristic")


def test_default_mode_prefers_first_party_without_checking(tuner, no_checks):
    offered, inputs, layout = _third_party(ZeroChoice(), ReluChoice("own"))
    offered[1] = replace(offered[1], first_party=True)
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert sel.label == "vendor/own" and sel.source == "heuristic"


def test_zeroing_and_crashing_choices_are_checked_in_isolation_and_refused(tuner, monkeypatch):
    offered, inputs, layout = _third_party(ZeroChoice(), SegfaultChoice())
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert sel.label == "extern/torch.mm", sel.summary
    assert "vendor/zero: wrong result" in sel.summary
    assert "vendor/segfault: crash (killed by SIGSEGV)" in sel.summary
    records = CheckRecords(tuner.cache, cache_key_fields("mm", inputs, layout, RELU, []))
    assert [records.passed(c) for c in offered] == [False, False]
    # The verdicts are kept: the next selection of this problem checks nothing.
    monkeypatch.setattr(benchmark, "check_candidates", _no_more_checks)
    again = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert again.label == "extern/torch.mm"


def _no_more_checks(*args, **kwargs):
    raise AssertionError("a recorded verdict must not be checked again")


def test_a_third_party_choice_that_passes_its_check_is_taken(tuner, monkeypatch):
    offered, inputs, layout = _third_party(CrashChoice(), ReluChoice())
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert (sel.label, sel.source) == ("vendor/relu", "heuristic"), sel.summary
    assert "passed a correctness check just now" in sel.summary
    monkeypatch.setattr(benchmark, "check_candidates", _no_more_checks)
    again = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert again.label == "vendor/relu"
    assert "passed a correctness check on this machine" in again.summary


def _relu_measures_fastest(monkeypatch) -> None:
    """Quick mode's timings, made deterministic: ``vendor/relu`` and ``torch.mm`` nearly
    tie on a loaded CPU, and the winner quick mode records is what later selections of the
    same provider set reuse."""
    real = benchmark.run_benchmarks

    def ranked(problem, labels, choices, *args, **kwargs):
        run = real(problem, labels, choices, *args, **kwargs)
        outcomes = [
            replace(o, time_ms=1.0 if o.label == "vendor/relu" else 2.0) if o.ok else o
            for o in run.outcomes
        ]
        return replace(run, outcomes=outcomes)

    monkeypatch.setattr(benchmark, "run_benchmarks", ranked)


def test_quick_mode_records_verdicts_that_default_mode_then_uses(tuner, monkeypatch):
    _relu_measures_fastest(monkeypatch)
    offered, inputs, layout = _third_party(ZeroChoice(), ReluChoice())
    quick = tuner.select("mm", offered, inputs, layout, RELU, mode="quick")
    assert quick.failures["vendor/zero"][0] == "wrong result"
    records = CheckRecords(tuner.cache, cache_key_fields("mm", inputs, layout, RELU, []))
    assert [records.passed(c) for c in offered] == [False, True]
    # A new provider set misses the winners cache; the verdicts still hold.
    monkeypatch.setattr(benchmark, "check_candidates", _no_more_checks)
    only_zero, _, _ = _third_party(ZeroChoice())
    assert tuner.select("mm", only_zero, inputs, layout, RELU).label == "extern/torch.mm"
    renamed = [replace(c, provider="vendor") for c in offered]
    assert tuner.select("mm", renamed[1:], inputs, layout, RELU).label == "vendor/relu"


def test_checks_stop_at_max_checks(tuner, monkeypatch):
    from tilefuse_autotune import selection

    seen = []

    def fake_checks(problem, labels, choices, config, bench=None):
        seen.append(list(labels))
        return [benchmark.Outcome(label, reason=benchmark.WRONG) for label in labels]

    monkeypatch.setattr(benchmark, "check_candidates", fake_checks)
    offered, inputs, layout = _third_party(*(ZeroChoice(f"z{i}") for i in range(5)))
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert sel.label == "extern/torch.mm"
    assert seen == [["vendor/z0", "vendor/z1"]] and selection.MAX_CHECKS == 2
    tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert seen[1] == ["vendor/z2", "vendor/z3"]
