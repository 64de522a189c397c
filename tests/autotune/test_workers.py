"""Benchmarking spread over several workers: every candidate measured once, results merged.

Without a GPU, several CPU workers stand in for several GPUs (``TILEFUSE_AUTOTUNE_WORKERS``,
or a ``Bench`` given the device list); the GPU test needs two GPUs of one model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

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
    """Candidate name -> Counter of the process ids its runs happened in
    (``RecordingChoice``'s log)."""
    runs: dict[str, Counter] = {}
    for line in log.read_text().splitlines():
        pid, name, _ = line.split(" ")
        runs.setdefault(name, Counter())[pid] += 1
    return runs


def _gpus(log) -> set[str]:
    """The UUIDs of the GPUs that ``RecordingChoice`` runs happened on."""
    return {line.split(" ")[2] for line in log.read_text().splitlines()}


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
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


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


@pytest.mark.parametrize("var", ["WORLD_SIZE", "LOCAL_WORLD_SIZE"])
def test_a_rank_of_a_multi_process_job_keeps_to_its_own_gpu(mixed_gpus, monkeypatch, var):
    """Under torchrun the other GPUs are other ranks' (busy training): only the compiling
    GPU measures, unless the workers setting asks for more."""
    monkeypatch.setenv(var, "1")
    assert devices.worker_devices("cuda") == ["cuda:2", "cuda:0", "cuda:3"]
    monkeypatch.setenv(var, "4")
    assert devices.worker_devices("cuda") == ["cuda:2"]
    assert devices.worker_devices("cpu") == ["cpu"]
    monkeypatch.setenv(devices.WORKERS_ENV, "2")
    assert devices.worker_devices("cuda") == ["cuda:2", "cuda:0"]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_workers_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(devices.WORKERS_ENV, value)
    with pytest.raises(TilefuseError, match="TILEFUSE_AUTOTUNE_WORKERS"):
        devices.worker_devices("cpu")


def test_a_worker_on_another_gpu_sees_it_at_the_compiling_gpus_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.pinned_env(2, 2) == {}
    assert devices.pinned_env(2, 0) == {"CUDA_VISIBLE_DEVICES": "2,1,0,3"}
    assert devices.pinned_env(0, 3) == {"CUDA_VISIBLE_DEVICES": "3,1,2,0"}
    # Entries of the parent's own list are kept: its cuda:1 is the GPU listed second.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a, GPU-b,GPU-c,GPU-d,GPU-e")
    assert devices.pinned_env(0, 1) == {"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-a,GPU-c,GPU-d"}
    monkeypatch.setattr(torch.version, "hip", "6.2")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "4,5,6,7")
    assert devices.pinned_env(1, 3) == {"HIP_VISIBLE_DEVICES": "4,7,6,5"}


def test_bench_names_and_pins_its_workers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = Bench(devices=lambda device: ["cuda:1", "cuda:0"])
    assert gpus.worker_slots("cuda:1") == [
        ("cuda:1", {}),
        ("cuda:0", {"CUDA_VISIBLE_DEVICES": "1,0"}),  # its cuda:1 is our cuda:0
    ]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert gpus.worker_slots("cuda") == gpus.worker_slots("cuda:1")
    cpus = Bench(devices=lambda device: [device, device])
    assert cpus.worker_slots("cpu") == [("cpu#0", {}), ("cpu#1", {})]


# --- two CPU workers --------------------------------------------------------------------


def test_every_candidate_is_measured_exactly_once_by_one_of_two_workers(
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
    # Which worker takes which candidate is first come, first served: on a loaded machine
    # one worker may take them all, so only the bound and the accounting are fixed here
    # (the GPU test checks that both GPUs take part).
    assert 1 <= len({pid for pids in runs.values() for pid in pids}) <= 2
    assert set(sel.workers) <= {"cpu#0", "cpu#1"}
    assert sum(sel.workers.values()) == 7
    if len(sel.workers) == 2:
        assert (
            f"; measured on cpu#0 {sel.workers['cpu#0']}, cpu#1 {sel.workers['cpu#1']}; took "
            in sel.summary
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


def test_a_candidate_that_does_not_pickle_fails_alone(cache, two_cpu_workers):
    unpicklable = FastChoice("unpicklable")
    unpicklable.hook = lambda: None  # a lambda does not pickle
    offered = [SlowChoice("a"), unpicklable, FastChoice("b")]
    tuner = Autotuner(cache=cache, bench_config=FAST_LIMITS, bench=two_cpu_workers)
    inputs, layout = mm_problem()
    sel = tuner.select("mm", offered, inputs, layout, mode="max")
    reason, detail = sel.failures["explicit/unpicklable"]
    assert (reason, detail.split(":")[0]) == ("compile error", "build not run")
    assert set(sel.timings_ms) == {"extern/torch.mm", "explicit/a", "explicit/b"}


def test_the_winner_is_the_same_with_one_worker_or_two(
    tmp_path, monkeypatch, one_cpu_worker, two_cpu_workers
):
    """Timings made deterministic (each candidate reports the time its name states); a tie
    goes to the candidate offered first, even when it finishes last (``ms1-a`` does ten
    products a run, ``ms1-b`` one): outcomes merge in candidate order.

    Nothing here is about limits: a run gets a liveness bound far above FAST_LIMITS' 3 s,
    which a slow candidate's check and timing can pass on a loaded machine (the timeout
    itself is tested in test_select.py, with a hanging candidate)."""
    monkeypatch.setattr(benchmark.measure, "measure", measure_by_name)
    limits = replace(FAST_LIMITS, timeout_s=120.0)

    def tune(bench, cache_dir):
        offered = [SlowChoice("ms3"), SlowChoice("ms1-a"), FastChoice("ms1-b"), FastChoice("ms2")]
        tuner = Autotuner(cache=cache_dir, bench_config=limits, bench=bench)
        inputs, layout = mm_problem()
        return tuner.select("mm", offered, inputs, layout, mode="max")

    alone = tune(one_cpu_worker, WinnersCache(tmp_path / "one"))
    shared = tune(two_cpu_workers, WinnersCache(tmp_path / "two"))

    assert alone.failures == shared.failures == {}, (alone.summary, shared.summary)
    assert alone.label == shared.label == "explicit/ms1-a"
    assert alone.timings_ms == shared.timings_ms
    assert list(alone.timings_ms) == list(shared.timings_ms)
    assert alone.workers == {"cpu": 5}
    # First come, first served: on a loaded machine one worker may take every candidate
    # (as in the test above), so only the accounting is fixed here.
    assert sum(shared.workers.values()) == 5
    assert set(shared.workers) <= {"cpu#0", "cpu#1"}


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
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_both_gpus_measure_candidates_on_their_own_device(cache, tmp_path, monkeypatch, device):
    """With ``"cuda"`` (the current device, cuda:0) and ``"cuda:1"`` compiling: both
    workers take part, each on its own physical GPU, with the inputs on it."""
    reason = _two_gpus_of_one_model()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.delenv(devices.WORKERS_ENV, raising=False)
    torch.cuda.set_device(0)
    log = tmp_path / "runs.log"
    offered = [RecordingChoice(f"r{i}", str(log)) for i in range(8)]
    quick_timing = TimingConfig(cuda_warmup_ms=1.0, cuda_rep_ms=2.0)
    tuner = Autotuner(cache=cache, bench_config=BenchConfig(timing=quick_timing))
    inputs, layout = mm_problem(256, 256, 256, device=device)
    sel = tuner.select("mm", offered, inputs, layout, mode="max")

    # RecordingChoice raises unless its tensors are on the worker's current device.
    assert sel.failures == {}, sel.failures
    assert len(sel.timings_ms) == 9
    assert sel.workers.get("cuda:0", 0) >= 1 and sel.workers.get("cuda:1", 0) >= 1, sel.workers
    assert sum(sel.workers.values()) == 9
    assert set(_runs(log)) == {f"r{i}" for i in range(8)}
    uuids = {str(torch.cuda.get_device_properties(i).uuid) for i in range(2)}
    assert _gpus(log) == uuids, "each worker ran on its own GPU"
    assert "; measured on cuda:0 " in sel.summary


def _select_max(tmp_path, bench, offered):
    """A max-mode selection of a CPU ``mm`` among ``offered`` on ``bench``'s workers."""
    tuner = Autotuner(cache=WinnersCache(tmp_path / "c"), bench_config=FAST_LIMITS, bench=bench)
    inputs, layout = mm_problem()
    return tuner.select("mm", offered, inputs, layout, mode="max")


def test_thread_safe_builds_run_on_threads_of_the_measuring_worker(tmp_path, one_cpu_worker):
    """``thread_safe_build`` choices skip the compile pool: the benchmark worker builds them
    all on its threads, then measures them in the same process; a failed one is a compile
    error."""
    from tests.autotune.fake_choices import ThreadBuiltChoice

    log = tmp_path / "log"
    offered = [ThreadBuiltChoice("t1", str(log)), ThreadBuiltChoice("t2", str(log)),
               ThreadBuiltChoice("bad", str(log), fail=True)]  # fmt: skip
    sel = _select_max(tmp_path, one_cpu_worker, offered)

    assert sel.failures == {"explicit/bad": ("compile error", sel.failures["explicit/bad"][1])}
    assert "no such tile" in sel.failures["explicit/bad"][1]
    lines = [line.split(" ") for line in log.read_text().splitlines()]
    builds = [(pid, rest) for pid, kind, rest in lines if kind == "build"]
    runs = {pid for pid, kind, _ in lines if kind in ("t1", "t2")}
    assert len(runs) == 1  # one benchmark worker measured both
    first_builds = builds[:3]  # then each measurement calls compile() again, a cache hit
    assert {pid for pid, _ in first_builds} == runs
    assert all(thread.startswith("tilefuse-build") for _, thread in first_builds)


def test_a_thread_built_choice_that_kills_its_worker_fails_alone(tmp_path, one_cpu_worker):
    """The benchmark worker dies building one of them: each is then built alone in the
    compile pool, where only that one fails; the others are measured."""
    from tests.autotune.fake_choices import ThreadBuiltChoice

    log = tmp_path / "log"
    offered = [ThreadBuiltChoice("t1", str(log)), ThreadBuiltChoice("boom", str(log), crash=True),
               ThreadBuiltChoice("t2", str(log))]  # fmt: skip
    sel = _select_max(tmp_path, one_cpu_worker, offered)

    assert set(sel.failures) == {"explicit/boom"}, sel.summary
    reason, detail = sel.failures["explicit/boom"]
    assert reason == "compile error" and "SIGABRT" in detail
    assert {"explicit/t1", "explicit/t2"} <= set(sel.timings_ms)


def test_with_two_workers_each_builds_the_thread_built_choices_and_each_runs_once(
    tmp_path, two_cpu_workers
):
    """Either worker may measure any of them, so both build them all; the first to finish
    queues them, and each is measured exactly once."""
    from tests.autotune.fake_choices import ThreadBuiltChoice

    log = tmp_path / "log"
    offered = [ThreadBuiltChoice(f"t{k}", str(log)) for k in range(4)]
    sel = _select_max(tmp_path, two_cpu_workers, offered)

    assert sel.failures == {}, sel.summary
    assert set(sel.timings_ms) == {"extern/torch.mm", *(f"explicit/t{k}" for k in range(4))}
    assert sum(sel.workers.values()) == 5  # each candidate measured once
    lines = [line.split(" ") for line in log.read_text().splitlines()]
    threaded = Counter(pid for pid, kind, rest in lines
                       if kind == "build" and rest.startswith("tilefuse-build"))  # fmt: skip
    assert len(threaded) == 2 and set(threaded.values()) == {4}  # both workers built all four


def test_thread_builds_that_ran_out_of_memory_together_are_built_again_alone(
    tmp_path, one_cpu_worker
):
    from tests.autotune.fake_choices import MemoryHungryBuildChoice

    log = tmp_path / "log"
    offered = [MemoryHungryBuildChoice(f"m{k}", str(log)) for k in range(3)]
    sel = _select_max(tmp_path, one_cpu_worker, offered)

    assert sel.failures == {}, sel.summary
    assert {f"explicit/m{k}" for k in range(3)} <= set(sel.timings_ms)
