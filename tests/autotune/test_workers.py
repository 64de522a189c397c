"""Benchmarking spread over several workers: every candidate measured once, results merged.

Without a GPU, several CPU workers stand in for several GPUs (``TILEFUSE_AUTOTUNE_WORKERS``,
or a ``Bench`` given the device list); the GPU test needs two GPUs of one model.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.autotune.conftest import FAST_LIMITS
from tests.autotune.fake_choices import (
    CrashChoice,
    FastChoice,
    RecordingChoice,
    SlowChoice,
    measure_by_name,
    mm_problem,
)
from tilefuse import plugin
from tilefuse.errors import TilefuseError
from tilefuse_autotune import Autotuner, TimingConfig, WinnersCache, benchmark, devices
from tilefuse_autotune.benchmark import Bench, BenchConfig
from tilefuse_autotune.measure import Problem

RUNS_PER_MEASUREMENT = 1 + FAST_LIMITS.timing.cpu_warmup + FAST_LIMITS.timing.cpu_reps


@pytest.fixture(scope="module")
def two_cpu_workers():
    """Two benchmark workers on the CPU, kept warm for this module's tests."""
    bench = Bench(devices=lambda device: [device, device])
    yield bench
    bench.close()


@pytest.fixture(scope="module")
def one_cpu_worker():
    bench = Bench(devices=lambda device: [device])
    yield bench
    bench.close()


def _runs(log) -> dict[str, Counter]:
    """Candidate name -> Counter of the process ids its runs happened in."""
    runs: dict[str, Counter] = {}
    for line in log.read_text().splitlines():
        pid, name = line.split(" ", 1)
        runs.setdefault(name, Counter())[pid] += 1
    return runs


# --- which devices ----------------------------------------------------------------------


def test_device_index_reads_cuda_cuda_n_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert devices.device_index("cuda") == 2
    assert devices.device_index("cuda:3") == 3
    assert devices.device_index("cuda:0") == 0
    assert devices.device_index("cpu") is None
    assert devices.with_index("cuda") == "cuda:2"
    assert devices.with_index("cpu") == "cpu"
    with pytest.raises(TilefuseError, match="'cuda:x'"):
        devices.device_index("cuda:x")


@pytest.fixture
def mixed_gpus(monkeypatch):
    """Four fake GPUs, an H100 among H200s; the current device is cuda:2."""
    names = ["H200", "H100", "H200", "H200"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: names[i])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.delenv(devices.WORKERS_ENV, raising=False)


def test_gpus_of_the_compiling_gpus_model_take_part_compiling_one_first(mixed_gpus):
    assert devices.worker_devices("cuda") == ["cuda:2", "cuda:0", "cuda:3"]
    assert devices.worker_devices("cuda:0") == ["cuda:0", "cuda:2", "cuda:3"]
    assert devices.worker_devices("cuda:1") == ["cuda:1"]


def test_the_workers_setting_caps_gpus_and_sets_cpu_workers(mixed_gpus, monkeypatch):
    assert devices.worker_devices("cpu") == ["cpu"]
    monkeypatch.setenv(devices.WORKERS_ENV, "2")
    assert devices.worker_devices("cuda") == ["cuda:2", "cuda:0"]
    assert devices.worker_devices("cpu") == ["cpu", "cpu"]
    monkeypatch.setenv(devices.WORKERS_ENV, "1")
    assert devices.worker_devices("cuda:3") == ["cuda:3"]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_workers_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(devices.WORKERS_ENV, value)
    with pytest.raises(TilefuseError, match="TILEFUSE_AUTOTUNE_WORKERS"):
        devices.worker_devices("cpu")


def test_workers_sharing_a_device_get_distinct_names():
    bench = Bench(devices=lambda device: ["cuda:0", "cuda:1", "cpu", "cpu"])
    assert bench.worker_slots("cuda:0") == [
        ("cuda:0", "cuda:0"),
        ("cuda:1", "cuda:1"),
        ("cpu#0", "cpu"),
        ("cpu#1", "cpu"),
    ]


def test_a_worker_gets_the_problem_on_its_own_device():
    inputs, layout = mm_problem(device="cuda:0")
    moved = Problem("mm", inputs, layout, plugin.Epilogue()).on("cuda:1")
    assert {spec.device for spec in (*moved.inputs, moved.layout)} == {"cuda:1"}
    assert moved.on("cuda:1") is moved


# --- two CPU workers --------------------------------------------------------------------


def test_every_candidate_is_measured_exactly_once_and_both_workers_share(
    cache, tmp_path, monkeypatch
):
    """Through the setting, with the process-wide workers, as a user would."""
    monkeypatch.setenv(devices.WORKERS_ENV, "2")
    log = tmp_path / "runs.log"
    offered = [RecordingChoice(f"r{i}", str(log)) for i in range(6)]
    tuner = Autotuner(cache=cache, bench_config=FAST_LIMITS)
    inputs, layout = mm_problem(32, 16, 24)
    sel = tuner.select("mm", offered, inputs, layout, mode="max")

    assert sel.failures == {}
    assert set(sel.timings_ms) == {"extern/torch.mm", *(f"explicit/r{i}" for i in range(6))}
    runs = _runs(log)
    assert set(runs) == {f"r{i}" for i in range(6)}
    for name, pids in runs.items():
        # One measurement: the check run, the warmup and the timed runs, in one process.
        assert list(pids.values()) == [RUNS_PER_MEASUREMENT], (name, pids)
    assert len({pid for pids in runs.values() for pid in pids}) == 2, "two worker processes"
    assert set(sel.workers) == {"cpu#0", "cpu#1"}
    assert sum(sel.workers.values()) == 7
    assert sel.summary.endswith(
        f"; measured on cpu#0 {sel.workers['cpu#0']}, cpu#1 {sel.workers['cpu#1']}"
    )


def test_a_crash_in_one_worker_fails_only_its_candidates(cache, two_cpu_workers):
    offered = [
        FastChoice("a"),
        CrashChoice(),
        SlowChoice("b"),
        FastChoice("c"),
        SlowChoice("d"),
    ]
    tuner = Autotuner(cache=cache, bench_config=FAST_LIMITS, bench=two_cpu_workers)
    inputs, layout = mm_problem()
    sel = tuner.select("mm", offered, inputs, layout, mode="max")

    assert {label: reason for label, (reason, _) in sel.failures.items()} == {
        "explicit/crash": "crash",
    }
    assert set(sel.timings_ms) == {
        "extern/torch.mm",
        "explicit/a",
        "explicit/b",
        "explicit/c",
        "explicit/d",
    }
    assert sum(sel.workers.values()) == 6
    assert sel.label in ("explicit/a", "explicit/c"), sel.summary


def test_the_winner_is_the_same_with_one_worker_or_two(
    tmp_path, monkeypatch, one_cpu_worker, two_cpu_workers
):
    """Timings made deterministic (each candidate reports the time its name states); a tie
    goes to the candidate offered first, even when it finishes last (``ms1-a`` does ten
    products a run, ``ms1-b`` one): outcomes merge in candidate order."""
    monkeypatch.setattr(benchmark.measure, "measure", measure_by_name)

    def tune(bench, cache_dir):
        offered = [SlowChoice("ms3"), SlowChoice("ms1-a"), FastChoice("ms1-b"), FastChoice("ms2")]
        tuner = Autotuner(cache=cache_dir, bench_config=FAST_LIMITS, bench=bench)
        inputs, layout = mm_problem()
        return tuner.select("mm", offered, inputs, layout, mode="max")

    alone = tune(one_cpu_worker, WinnersCache(tmp_path / "one"))
    shared = tune(two_cpu_workers, WinnersCache(tmp_path / "two"))

    assert alone.label == shared.label == "explicit/ms1-a"
    assert alone.timings_ms == shared.timings_ms
    assert list(alone.timings_ms) == list(shared.timings_ms)
    assert alone.workers == {"cpu": 5}
    assert sum(shared.workers.values()) == 5 and len(shared.workers) == 2


def test_checks_are_spread_too(two_cpu_workers):
    inputs, layout = mm_problem()
    problem = Problem("mm", inputs, layout, plugin.Epilogue())
    choices = [FastChoice("a"), CrashChoice(), SlowChoice("b")]
    outcomes = benchmark.check_candidates(
        problem, ["x/a", "x/crash", "x/b"], choices, FAST_LIMITS, two_cpu_workers
    )
    assert [(o.label, o.ok, o.time_ms) for o in outcomes] == [
        ("x/a", True, None),
        ("x/crash", False, None),
        ("x/b", True, None),
    ]
    assert outcomes[1].reason == "crash"
    assert all(o.worker in ("cpu#0", "cpu#1") for o in outcomes)


# --- two GPUs ---------------------------------------------------------------------------


def _two_gpus_of_one_model() -> str | None:
    """Why the multi-GPU test cannot run here, or ``None`` when it can."""
    if not torch.cuda.is_available():
        return "needs CUDA GPUs"
    if torch.cuda.device_count() < 2:
        return f"needs 2 GPUs; {torch.cuda.device_count()} visible"
    if torch.cuda.get_device_name(0) != torch.cuda.get_device_name(1):
        return "needs 2 GPUs of one model (cuda:0 and cuda:1 differ)"
    return None


@pytest.mark.gpu
def test_both_gpus_measure_candidates_on_their_own_device(cache, tmp_path, monkeypatch):
    reason = _two_gpus_of_one_model()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.delenv(devices.WORKERS_ENV, raising=False)
    torch.cuda.set_device(0)
    log = tmp_path / "runs.log"
    offered = [RecordingChoice(f"r{i}", str(log)) for i in range(8)]
    quick_timing = TimingConfig(cuda_warmup_ms=1.0, cuda_rep_ms=2.0)
    tuner = Autotuner(cache=cache, bench_config=BenchConfig(timing=quick_timing))
    inputs, layout = mm_problem(256, 256, 256, device="cuda")  # the current device
    sel = tuner.select("mm", offered, inputs, layout, mode="max")

    # RecordingChoice raises unless its tensors are on the worker's current device.
    assert sel.failures == {}, sel.failures
    assert len(sel.timings_ms) == 9
    assert sel.workers.get("cuda:0", 0) >= 1 and sel.workers.get("cuda:1", 0) >= 1, sel.workers
    assert sum(sel.workers.values()) == 9
    assert set(_runs(log)) == {f"r{i}" for i in range(8)}
    assert "; measured on cuda:0 " in sel.summary
