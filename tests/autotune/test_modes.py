"""Modes off, default, quick, max and replay, with the benchmark replaced by a recorder."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.autotune.fake_choices import FakeProvider, FastChoice, SlowChoice, mm_problem
from tilefuse import plugin
from tilefuse.errors import TilefuseError
from tilefuse_autotune import Candidate, benchmark, candidates_for
from tilefuse_autotune.benchmark import BenchRun, Outcome


@pytest.fixture
def bench_calls(monkeypatch):
    """Replaces benchmarking: the last candidate offered is the fastest."""
    calls: list[list[str]] = []

    def fake_run(problem, labels, choices, config, progress, bench=None):
        calls.append(list(labels))
        return BenchRun([Outcome(label, time_ms=100.0 - i) for i, label in enumerate(labels)], 0.0)

    monkeypatch.setattr(benchmark, "run_benchmarks", fake_run)
    return calls


RELU = plugin.Epilogue((plugin.EpilogueStep("relu"),))
NO_EPILOGUE = plugin.Epilogue()


def _offered(epilogue=NO_EPILOGUE):
    """Candidates of two providers, treated as first party (as tilefuse's own are): the
    third-party rules have their own tests in test_third_party.py."""
    inputs, layout = mm_problem()
    providers = [
        FakeProvider("alpha", [SlowChoice(f"a{i}") for i in range(3)]),
        FakeProvider("beta", [FastChoice(f"b{i}") for i in range(3)]),
    ]
    found = candidates_for("mm", inputs, layout, epilogue, providers)
    return [replace(c, first_party=True) for c in found], inputs, layout


def test_off_without_an_epilogue_takes_extern(tuner, bench_calls):
    offered, inputs, layout = _offered()
    sel = tuner.select("mm", offered, inputs, layout, mode="off")
    assert (sel.label, sel.source, bench_calls) == ("extern/torch.mm", "heuristic", [])
    assert tuner.cache.entries() == {}


def test_off_with_an_epilogue_takes_the_first_fused_choice(tuner, bench_calls):
    offered, inputs, layout = _offered(RELU)
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="off")
    assert (sel.label, sel.source, bench_calls) == ("alpha/a0", "heuristic", [])


def test_the_heuristic_never_takes_a_slow_build(tuner, bench_calls):
    offered, inputs, layout = _offered(RELU)
    for c in offered[:3]:
        c.choice.slow_build = True
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert (sel.label, sel.source, bench_calls) == ("beta/b0", "heuristic", [])


def test_default_never_benchmarks_and_writes_nothing(tuner, bench_calls):
    offered, inputs, layout = _offered(RELU)
    sel = tuner.select("mm", offered, inputs, layout, RELU, mode="default")
    assert (sel.label, sel.source, bench_calls) == ("alpha/a0", "heuristic", [])
    assert "no cached winner" in sel.summary and tuner.cache.entries() == {}


def test_off_without_choices_takes_extern(tuner, bench_calls):
    inputs, layout = mm_problem()
    sel = tuner.select("mm", [], inputs, layout, mode="off")
    assert sel.label == "extern/torch.mm" and bench_calls == []


def test_quick_benchmarks_a_short_list_per_provider(tuner, bench_calls):
    offered, inputs, layout = _offered()
    sel = tuner.select("mm", offered, inputs, layout, mode="quick")
    assert bench_calls == [["extern/torch.mm", "alpha/a0", "alpha/a1", "beta/b0", "beta/b1"]]
    assert sel.label == "beta/b1" and sel.tried == 5


def test_max_benchmarks_everything_and_ignores_a_quick_winner(tuner, bench_calls):
    offered, inputs, layout = _offered()
    tuner.select("mm", offered, inputs, layout, mode="quick")
    sel = tuner.select("mm", offered, inputs, layout, mode="max")
    assert len(bench_calls) == 2 and len(bench_calls[1]) == 7
    assert sel.label == "beta/b2" and sel.source == "benchmark"
    # A max winner then serves default without benchmarking.
    again = tuner.select("mm", offered, inputs, layout, mode="default")
    assert again.source == "cache" and again.label == "beta/b2" and len(bench_calls) == 2


def test_replay_uses_only_cached_winners(tuner, bench_calls):
    offered, inputs, layout = _offered()
    miss = tuner.select("mm", offered, inputs, layout, mode="replay")
    assert (miss.label, miss.source) == ("extern/torch.mm", "heuristic")
    assert "no cached winner" in miss.summary and bench_calls == []
    tuner.select("mm", offered, inputs, layout, mode="quick")
    hit = tuner.select("mm", offered, inputs, layout, mode="replay")
    assert (hit.label, hit.source) == ("beta/b1", "cache") and len(bench_calls) == 1


def test_provider_version_enters_the_key(tuner, bench_calls):
    inputs, layout = mm_problem()
    first = [Candidate("alpha", "1.0", FastChoice("x"))]
    tuner.select("mm", first, inputs, layout, mode="quick")
    upgraded = [Candidate("alpha", "2.0", FastChoice("x"))]
    sel = tuner.select("mm", upgraded, inputs, layout, mode="quick")
    assert sel.source == "benchmark" and len(bench_calls) == 2


def test_scheduling_policy_uuid_enters_the_key(tuner, bench_calls, monkeypatch):
    pytest.importorskip("tilefuse_toy", reason="install tests/plugins/toy (nox -s tests does)")
    from tilefuse.discovery import reset_registry

    reset_registry()
    inputs, layout = mm_problem()
    monkeypatch.delenv("TILEFUSE_POLICY", raising=False)
    tuner.select("mm", [FastChoice("x")], inputs, layout, mode="quick")
    monkeypatch.setenv("TILEFUSE_POLICY", "toy-policy")
    sel = tuner.select("mm", [FastChoice("x")], inputs, layout, mode="quick")
    assert sel.source == "benchmark" and len(bench_calls) == 2
    (entry,) = [e for e in tuner.cache.entries().values() if e["key"]["policy"]]
    assert entry["key"]["policy"] == "toy-policy-v1"


@pytest.mark.parametrize(
    "change",
    [
        lambda i, o: ((i[0], i[1]), o.__class__((96, 96), (1, 96), "float32", "cpu")),
        lambda i, o: ((i[0].__class__((96, 96), (1, 96), "float32", "cpu"), i[1]), o),
        lambda i, o: (
            (i[0].__class__((96, 96), (96, 1), "float16", "cpu"), i[1]),
            o,
        ),
    ],
    ids=["out-stride", "in-stride", "dtype"],
)
def test_layout_enters_the_key(tuner, bench_calls, change):
    inputs, layout = mm_problem()
    tuner.select("mm", [FastChoice()], inputs, layout, mode="quick")
    inputs2, layout2 = change(inputs, layout)
    sel = tuner.select("mm", [FastChoice()], inputs2, layout2, mode="quick")
    assert sel.source == "benchmark" and len(bench_calls) == 2


def test_mode_comes_from_the_environment(tuner, bench_calls, monkeypatch):
    offered, inputs, layout = _offered()
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "off")
    assert tuner.select("mm", offered, inputs, layout).source == "heuristic"
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "fastest")
    with pytest.raises(TilefuseError, match="off, default, quick, max, replay"):
        tuner.select("mm", offered, inputs, layout)


def test_unknown_op_and_duplicate_names_are_refused(tuner):
    inputs, layout = mm_problem()
    with pytest.raises(TilefuseError, match="cannot autotune op 'conv'"):
        tuner.select("conv", [], inputs, layout, mode="off")
    with pytest.raises(ValueError, match="unique"):
        tuner.select("mm", [FastChoice(), FastChoice()], inputs, layout, mode="off")


def test_tf32_enters_the_key_and_the_problem_of_a_float32_cuda_gemm_only(monkeypatch):
    """A worker runs float32 matmuls as the selecting process does (TF32 or not), and a
    winner measured with TF32 is not served to a process without it."""
    from tilefuse import gemm_shape
    from tilefuse_autotune import Autotuner, WinnersCache, keys

    inputs, _ = mm_problem()
    cuda = plugin.TensorSpec((96, 96), (96, 1), "float32", "cuda:0")
    half = plugin.TensorSpec((96, 96), (96, 1), "float16", "cuda:0")
    cpu = plugin.TensorSpec((96, 96), (96, 1), "float32", "cpu")
    monkeypatch.setattr(keys, "device_name", lambda device: device)  # no GPU to ask here
    monkeypatch.setattr(gemm_shape, "tf32_matmuls", lambda: False)
    off = keys.cache_key_fields("mm", inputs, cuda, NO_EPILOGUE, [])
    monkeypatch.setattr(gemm_shape, "tf32_matmuls", lambda: True)
    on = keys.cache_key_fields("mm", inputs, cuda, NO_EPILOGUE, [])
    assert off["tf32"] is False and on["tf32"] is True
    assert "tf32" not in keys.cache_key_fields("mm", inputs, half, NO_EPILOGUE, [])
    assert "tf32" not in keys.cache_key_fields("mm", inputs, cpu, NO_EPILOGUE, [])

    problems = []

    def fake_run(problem, labels, choices, config, progress, bench=None):
        problems.append(problem)
        return BenchRun([Outcome(label, time_ms=1.0) for label in labels], 0.0)

    monkeypatch.setattr(benchmark, "run_benchmarks", fake_run)
    tuner = Autotuner(cache=WinnersCache(None))
    tuner.select("mm", [FastChoice()], *mm_problem(), mode="max")
    assert problems[-1].tf32 is False  # a CPU problem never asks for TF32
    a = plugin.TensorSpec((96, 96), (96, 1), "float32", "cuda:0")
    tuner.select("mm", [FastChoice()], (a, a), cuda, mode="max")
    assert problems[-1].tf32 is True and problems[-1].layout.device == "cuda:0"
