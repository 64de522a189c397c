"""The benchmark harness: floor math on known numbers, do_bench compatibility, verdicts,
result checking, failure handling, and a CPU ``--smoke`` run's JSON schema."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench import backends, checks, floors, report, run, targets, timing, workloads

REPO = Path(__file__).resolve().parents[2]
MS = 1e-3


# ---- % of floor -------------------------------------------------------------------------


def test_pct_of_floor_memory_bound():
    # 2 GB at 1 TB/s is a 2 ms floor; measured 4 ms is half of it
    assert floors.pct_of_floor(2e9, 0, 4.0, 1e12, 1e15) == pytest.approx(50.0)


def test_pct_of_floor_compute_bound():
    # 1 TFLOP at 1 PFLOP/s is a 1 ms floor; the 1 MB of traffic (1 us) does not matter
    assert floors.pct_of_floor(1e6, 1e12, 2.0, 1e12, 1e15) == pytest.approx(50.0)


def test_floor_is_the_larger_bound():
    # bytes alone: 1 ms; flops alone: 3 ms
    assert floors.floor_seconds(1e9, 3e12, 1e12, 1e15) == pytest.approx(3 * MS)
    assert floors.floor_seconds(5e9, 3e12, 1e12, 1e15) == pytest.approx(5 * MS)
    assert floors.pct_of_floor(5e9, 3e12, 5.0, 1e12, 1e15) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "args",
    [(1e9, 0, 0.0, 1e12, 1e15), (1e9, 0, -1.0, 1e12, 1e15), (1e9, 0, 1.0, 0.0, 1e15)],
)
def test_pct_of_floor_rejects_impossible_inputs(args):
    with pytest.raises(ValueError):
        floors.pct_of_floor(*args)


def test_floors_json_round_trip():
    f = floors.Floors(2e12, 7e14, 1.0, 1 << 30, 1.5, 8192, "bfloat16")
    data = f.to_json()
    assert data["copy_gb_per_s"] == pytest.approx(2000.0)
    assert data["mm_tflops"] == pytest.approx(700.0)
    assert floors.Floors.from_json(data) == f


# ---- do_bench across Triton releases ------------------------------------------------------


def test_do_bench_with_return_mode_asks_for_the_median():
    seen = {}

    def do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        seen.update(warmup=warmup, rep=rep, quantiles=quantiles, return_mode=return_mode)
        return 1.25

    ms = timing.do_bench_median(lambda: None, warmup_ms=7, rep_ms=11, do_bench=do_bench)
    assert ms == 1.25
    assert seen == {"warmup": 7, "rep": 11, "quantiles": None, "return_mode": "median"}


def test_do_bench_without_return_mode_uses_the_half_quantile():
    seen = {}

    def do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, fast_flush=True):
        seen.update(quantiles=quantiles, grad_to_none=grad_to_none)
        return [2.5]

    leaf = torch.zeros(1, requires_grad=True)
    ms = timing.do_bench_median(
        lambda: None, warmup_ms=1, rep_ms=1, grad_to_none=[leaf], do_bench=do_bench
    )
    assert ms == 2.5
    assert seen["quantiles"] == [0.5]
    assert seen["grad_to_none"] == [leaf]


def test_do_bench_tensor_result_is_a_float():
    def do_bench(fn, warmup=25, rep=100, quantiles=None):
        return torch.tensor([3.0])

    assert timing.do_bench_median(lambda: None, warmup_ms=1, rep_ms=1, do_bench=do_bench) == 3.0


def test_cpu_timer_resets_grads_and_counts_no_kernels():
    leaf = torch.ones(3, requires_grad=True)
    timer = timing.Timer(torch.device("cpu"), quick=True)

    def step():
        assert leaf.grad is None  # reset before every call, outside the timed region
        (leaf * 2).sum().backward()

    assert timer.median_ms(step, [leaf]) > 0
    assert timer.count_kernels(step, [leaf]) is None


# ---- verdicts -----------------------------------------------------------------------------


def _res(ms, pct=None, **extra):
    return {"ms": ms, "pct_of_floor": pct, "error": None, **extra}


MEM = targets.Target(90.0, "inductor")


@pytest.mark.parametrize(
    "results, status",
    [
        ({"inductor": _res(1.0, 90.0), "tilefuse": _res(0.9, 95.0)}, targets.PASS),
        ({"inductor": _res(1.0, 90.0), "tilefuse": _res(1.0, 90.0)}, targets.PASS),
        ({"inductor": _res(1.0, 90.0), "tilefuse": _res(1.01, 90.5)}, targets.MISS),
        ({"inductor": _res(2.0, 40.0), "tilefuse": _res(1.0, 89.9)}, targets.MISS),
        ({"inductor": _res(1.0), "tilefuse": {**_res(None), "error": "mismatch"}}, targets.MISS),
        ({"inductor": _res(1.0), "tilefuse": _res(None, skipped="no GPU")}, targets.NONE),
        ({"inductor": {**_res(None), "error": "x"}, "tilefuse": _res(1.0, 95.0)}, targets.NONE),
        ({"inductor": _res(1.0, 90.0)}, targets.NONE),
    ],
)
def test_verdict(results, status):
    assert targets.verdict(MEM, results)[0] == status


def test_verdict_judges_compile_time_against_inductor():
    fast = {"inductor": _res(1.0, 90.0, compile_s=1.0), "tilefuse": _res(0.9, 95.0, compile_s=2.0)}
    assert targets.verdict(MEM, fast)[0] == targets.PASS
    slow = {**fast, "tilefuse": _res(0.9, 95.0, compile_s=2.01)}
    status, reason = targets.verdict(MEM, slow)
    assert status == targets.MISS and "compile 2.01 s > 2x 1.00 s" in reason


def test_verdict_names_every_missed_part():
    results = {
        "inductor": _res(1.0, 90.0, compile_s=1.0),
        "tilefuse": _res(1.1, 80.0, compile_s=3.0),
    }
    status, reason = targets.verdict(MEM, results)
    assert status == targets.MISS
    assert "80.0% of floor < 90%" in reason and "slower than inductor" in reason
    assert "compile 3.00 s > 2x 1.00 s" in reason


def test_gemm_verdict_judges_the_autotuned_row():
    gemm = targets.Target(97.0, "inductor_max", row="tilefuse_max")
    results = {
        "inductor_max": _res(1.0, 97.0),
        "tilefuse": _res(1.2, 80.0),
        "tilefuse_max": _res(0.99, 98.0),
    }
    assert targets.verdict(gemm, results)[0] == targets.PASS
    results["tilefuse_max"] = _res(1.01, 97.5)
    assert targets.verdict(gemm, results)[0] == targets.MISS


def test_verdict_without_target():
    assert targets.verdict(None, {"tilefuse": _res(1.0, 10.0)})[0] == targets.NONE


def test_targets_are_the_project_goals():
    by_name = {w.name: w.target for w in workloads.WORKLOADS}
    assert by_name["column_sum"] == targets.Target(92.0, "inductor")
    assert by_name["transpose_add"] == targets.Target(85.0, "inductor")
    assert by_name["softmax"] == targets.Target(90.0, "inductor")
    assert by_name["gemm_bias_relu"] == targets.Target(97.0, "inductor_max", row="tilefuse_max")
    assert by_name["mlp_gelu"] == targets.Target(97.0, "inductor_max", row="tilefuse_max")


# ---- checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mismatch_elementwise(dtype):
    expected = torch.linspace(-3, 3, 101).to(dtype)
    tol = checks.tolerance_for(dtype)
    assert checks.mismatch([expected.clone()], [expected], tol) is None
    off = expected.clone()
    off[17] += 0.5
    assert "output 0" in checks.mismatch([off], [expected], tol)


def test_mismatch_elementwise_checks_small_valued_outputs():
    # softmax rows over 8192 columns are ~1e-4: a fixed atol of 1e-2 would accept anything
    expected = torch.softmax(torch.randn(4, 8192, generator=torch.Generator().manual_seed(0)), -1)
    tol = checks.tolerance_for(torch.bfloat16)
    expected = expected.to(torch.bfloat16)
    assert checks.mismatch([expected.clone()], [expected], tol) is None
    uniform = torch.full_like(expected, 1 / 8192)
    assert "elements off" in checks.mismatch([uniform], [expected], tol)


def test_mismatch_norm_tolerates_small_spread_but_not_a_wrong_result():
    gen = torch.Generator().manual_seed(0)
    expected = torch.randn(256, 256, generator=gen)
    noise = torch.randn(256, 256, generator=gen) * 1e-3
    tol = checks.tolerance_for(torch.bfloat16)
    assert checks.mismatch([expected + noise], [expected], tol, norm=True) is None
    assert "relative L2" in checks.mismatch([expected * 1.1], [expected], tol, norm=True)


def test_mismatch_shape_dtype_count_and_nonfinite():
    x = torch.ones(4)
    tol = checks.tolerance_for(torch.float32)
    assert "shape" in checks.mismatch([torch.ones(5)], [x], tol)
    assert "dtype" in checks.mismatch([x.double()], [x], tol)
    assert "outputs" in checks.mismatch([x, x], [x], tol)
    assert "non-finite" in checks.mismatch([torch.full((4,), float("nan"))], [x], tol)


# ---- measuring a backend ------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSpec(backends.BackendSpec):
    """A backend column whose 'compiler' is a plain Python function (no torch.compile)."""

    make: object = None

    def prepare(self, fn):
        return self.make(fn)


def _case():
    torch.manual_seed(0)
    return workloads.BY_NAME["bias_gelu"].build(torch.device("cpu"), True)


def _measure(make):
    case = _case()
    reference = run.reference_outputs(case)
    spec = FakeSpec("fake", "fake", None, make=make)
    timer = timing.Timer(torch.device("cpu"), quick=True)
    tol = checks.tolerance_for(case.dtype)
    return run.measure_backend(case, spec, timer, reference, tol, norm=False)


def test_measure_backend_times_a_correct_backend():
    result = _measure(lambda fn: fn)
    assert result["error"] is None and result["ms"] > 0


def test_measure_backend_records_a_failure_and_returns():
    def broken(fn):
        raise RuntimeError("codegen exploded")

    result = _measure(broken)
    assert result["ms"] is None
    assert result["error"] == "RuntimeError: codegen exploded"


def test_a_column_that_fails_after_its_timing_gets_no_more_rounds(monkeypatch):
    """Cleaning up a column (stopping autotune workers) can fail after the step was timed
    and kept: the column is an error, and the interleaved rounds must not time it."""

    @contextlib.contextmanager
    def failing_cleanup(extra_env=()):
        yield "/nonexistent"
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(backends, "cold_caches", failing_cleanup)
    case = _case()
    spec = FakeSpec("fake", "fake", {}, make=lambda fn: fn)
    kept: dict = {}
    timer = timing.Timer(torch.device("cpu"), quick=True)
    tol = checks.tolerance_for(case.dtype)
    reference = run.reference_outputs(case)
    result = run.measure_backend(case, spec, timer, reference, tol, norm=False, keep=kept)
    assert result["ms"] is None and "Bad file descriptor" in result["error"]
    assert kept == {}


def test_measure_backend_records_a_mismatch_as_an_error():
    result = _measure(lambda fn: lambda *args: fn(*args) + 0.25)
    assert result["ms"] is None
    assert result["error"].startswith("mismatch vs eager: output 0")


def test_training_case_checks_grads():
    torch.manual_seed(0)
    case = workloads.BY_NAME["transformer_block_train"].build(torch.device("cpu"), True)
    reference = run.reference_outputs(case)
    # the forward output and one grad per leaf (input x and every parameter)
    assert len(reference) == 1 + len(case.grad_leaves)
    assert all(leaf.grad is None for leaf in case.grad_leaves)
    assert case.flops == 3 * workloads.block_forward_flops(2, 16, 32)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known: softmax"):
        workloads.select(["softmax", "nope"])
    with pytest.raises(ValueError, match="known: eager"):
        backends.specs(["eager", "xla"])
    assert run.main(["--smoke", "--only", "nope", "--out", "/nonexistent"]) == 2


def test_inductor_max_only_on_gemm():
    columns = {s.name: s for s in backends.specs(["eager", "inductor", "tilefuse"])}
    assert columns["inductor_max"].runs_on(workloads.GEMM)
    assert not columns["inductor_max"].runs_on(workloads.MEMORY)
    assert dict(columns["tilefuse"].env) == {"TILEFUSE_STRICT": "1"}
    assert columns["tilefuse_max"].runs_on(workloads.GEMM)
    assert not columns["tilefuse_max"].runs_on(workloads.MEMORY)
    assert dict(columns["tilefuse_max"].env)["TILEFUSE_AUTOTUNE"] == "max"
    assert columns["inductor_max"].compile_kwargs == {"mode": "max-autotune-no-cudagraphs"}


def test_cold_caches_sets_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", "/keep/me")
    monkeypatch.delenv("TILEFUSE_CACHE_DIR", raising=False)
    import os

    with backends.cold_caches((("TILEFUSE_STRICT", "1"),)) as root:
        for var in backends.CACHE_VARS:
            assert os.environ[var].startswith(root)
        assert os.environ["TILEFUSE_STRICT"] == "1"
        assert Path(root).is_dir()
    assert os.environ["TRITON_CACHE_DIR"] == "/keep/me"
    assert "TILEFUSE_CACHE_DIR" not in os.environ
    assert not Path(root).exists()


def test_output_path_is_slugged_and_never_overwrites(tmp_path):
    import datetime as dt

    when = dt.datetime(2025, 3, 4, 5, 6)
    first = run.output_path(tmp_path, "NVIDIA H100 80GB HBM3", when)
    assert first.name == "nvidia-h100-80gb-hbm3_2025-03-04_0506.json"
    first.write_text("{}")
    assert run.output_path(tmp_path, "NVIDIA H100 80GB HBM3", when).name.endswith("_2.json")


# ---- the CPU smoke run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "bench/run.py", "--smoke", "--quick", "--backends", "eager"]
    proc = subprocess.run(
        [*cmd, "--device", "cpu", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return proc, files[0], json.loads(files[0].read_text())


def test_smoke_file_name(smoke_run):
    _, path, data = smoke_run
    assert re.fullmatch(r"[a-z0-9-]+_\d{4}-\d{2}-\d{2}_\d{4}\.json", path.name)
    assert path.name.startswith(run.slug(data["machine"]["device"]))


def test_smoke_schema(smoke_run):
    _, _, data = smoke_run
    assert data["schema"] == run.SCHEMA_VERSION
    for key in ("device", "device_type", "torch", "triton", "tilefuse"):
        assert key in data["machine"]
    assert data["machine"]["device_type"] == "cpu"
    assert data["mode"]["smoke"] is True
    assert data["floors"]["copy_bytes_per_s"] > 0 and data["floors"]["mm_flops_per_s"] > 0
    assert list(data["backends"]) == ["eager"]
    assert [w["name"] for w in data["workloads"]] == [w.name for w in workloads.WORKLOADS]
    for w in data["workloads"]:
        assert w["error"] is None, w["error"]
        assert w["bytes"] > 0 and w["flops"] >= 0
        assert set(w["results"]) == {"eager"}
        eager = w["results"]["eager"]
        assert set(run.RESULT_KEYS) <= set(eager)
        assert eager["error"] is None and eager["ms"] > 0
        assert eager["compile_s"] is None and eager["kernels"] is None  # eager, on the CPU


def test_smoke_pct_follows_from_the_saved_floors(smoke_run):
    _, _, data = smoke_run
    f = data["floors"]
    for w in data["workloads"]:
        eager = w["results"]["eager"]
        expected = floors.pct_of_floor(
            w["bytes"], w["flops"], eager["ms"], f["copy_bytes_per_s"], f["mm_flops_per_s"]
        )
        assert eager["pct_of_floor"] == pytest.approx(expected, rel=1e-12)
        assert w["floor_ms"] == pytest.approx(eager["ms"] * eager["pct_of_floor"] / 100)


def test_smoke_table_and_report_agree(smoke_run):
    proc, path, data = smoke_run
    table = report.format_report(data)
    assert table in proc.stdout
    for w in workloads.WORKLOADS:
        assert w.name in table
    printed = subprocess.run(
        [sys.executable, "bench/report.py", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == table.strip()


# ---- on the GPU machine -------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_smoke_eager_and_inductor(tmp_path):
    """Tiny shapes on CUDA: do_bench timing, profiler kernel counts, Inductor compile."""
    cmd = [sys.executable, "bench/run.py", "--smoke", "--quick", "--device", "cuda"]
    cmd += ["--backends", "eager,inductor", "--only", "softmax,gemm_bias_relu", "--out"]
    proc = subprocess.run(
        [*cmd, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["machine"]["device_type"] == "cuda"
    for w in data["workloads"]:
        for name, r in w["results"].items():
            assert r["error"] is None, (w["name"], name, r["error"])
            assert r["ms"] > 0 and r["kernels"] >= 1
            assert (r["compile_s"] is None) == (name == "eager")


def test_report_shows_errors_skips_and_verdicts():
    data = {
        "created": "2025-01-01T00:00:00+00:00",
        "machine": {"device": "GPU", "torch": "t", "triton": "tr", "tilefuse": "0.1"},
        "floors": floors.Floors(1e12, 1e15, 1.0, 1 << 30, 1.0, 8192, "bfloat16").to_json(),
        "mode": {"timing": "do_bench median"},
        "backends": {"tilefuse": {"usable": False, "reason": "no backend for cuda"}},
        "workloads": [
            {
                "name": "softmax",
                "target": MEM.to_json(),
                "error": None,
                "results": {
                    "inductor": {**_res(1.0, 91.0), "compile_s": 2.0, "kernels": 1},
                    "tilefuse": {**_res(None), "error": "mismatch vs eager: output 0: off"},
                },
            },
            {"name": "layer_norm", "target": MEM.to_json(), "error": "OOM", "results": {}},
            {
                "name": "rms_norm",
                "target": MEM.to_json(),
                "error": None,
                "results": {"tilefuse": _res(None, skipped="no backend for cuda")},
            },
        ],
    }
    table = report.format_report(data)
    assert "skipped backend tilefuse: no backend for cuda" in table
    assert "softmax: MISS: tilefuse has no time: mismatch vs eager" in table
    assert "layer_norm: OOM" in table
    assert "rms_norm: -: tilefuse skipped" in table
    assert "91.0" in table and "2.00" in table


# ---- interleaved rounds -----------------------------------------------------------------


def test_rounds_default_per_kind_and_override():
    assert run.rounds_for(workloads.GEMM, None) == 3
    assert run.rounds_for(workloads.TRAINING, None) == 3
    assert run.rounds_for(workloads.MEMORY, None) == 3
    assert run.rounds_for(workloads.MEMORY, 5) == 5


def test_interleave_times_every_column_each_round_in_order():
    calls: list[str] = []

    class FakeTimer:
        def median_ms(self, step, grad_to_none=None):
            return step()

    def column(name, ms):
        def step():
            calls.append(name)
            return ms

        return step

    class FakeCase:
        grad_leaves = ()

    steps = {"a": column("a", 1.0), "b": column("b", 2.0)}
    extra, probes = run.interleave(
        steps, FakeTimer(), FakeCase(), 3, lambda: calls.append("mm") or 0.5
    )
    assert calls == ["mm", "a", "mm", "b", "mm", "a", "mm", "b"]
    assert extra == {"a": [1.0, 1.0], "b": [2.0, 2.0]}
    assert probes == {"a": [0.5, 0.5], "b": [0.5, 0.5]}


def test_paired_pct_of_floor_judges_each_round_against_its_own_probe():
    case = workloads.Case(fn=None, args=(), bytes_moved=0, flops=2 * floors.GPU_MM_SIZE**3,
                          dtype=torch.bfloat16, shape="")  # fmt: skip
    # the floor drifts from 1.0 to 1.2 ms; the column is always 2% behind it
    pct = run.paired_pct_of_floor(case, [1.02, 1.224, 1.122], [1.0, 1.2, 1.1], 3e12)
    assert pct == pytest.approx(100 / 1.02)


def test_gemm_workload_reports_the_median_over_rounds(tmp_path):
    data = run.run_suite(
        run.parse_args(["--smoke", "--only", "gemm_bias_relu", "--backends", "eager",
                        "--device", "cpu", "--rounds", "3", "--out", str(tmp_path)])
    )  # fmt: skip
    result = data["workloads"][0]["results"]["eager"]
    assert len(result["ms_rounds"]) == 3
    assert result["ms"] == sorted(result["ms_rounds"])[1]
    assert data["mode"]["rounds"] == 3


def test_artifacts_seed_each_fresh_cache_and_collect_new_builds(tmp_path, monkeypatch):
    kept = tmp_path / "kept"
    (kept / "cuda" / "ab").mkdir(parents=True)
    (kept / "cuda" / "ab" / "old.so").write_bytes(b"built before")
    monkeypatch.setenv(backends.ARTIFACTS_ENV, str(kept))
    with backends.cold_caches() as root:
        cache = Path(os.environ["TILEFUSE_CACHE_DIR"])
        assert cache.is_relative_to(root)
        assert (cache / "cuda" / "ab" / "old.so").read_bytes() == b"built before"
        assert not (cache / "autotune").exists()  # winners stay cold
        (cache / "cuda" / "cd").mkdir()
        (cache / "cuda" / "cd" / "new.so").write_bytes(b"built in this column")
    assert (kept / "cuda" / "cd" / "new.so").read_bytes() == b"built in this column"
    assert not Path(root).exists()


def test_the_autotune_timeline_flag_logs_the_autotuner_at_debug(monkeypatch):
    import logging

    logger = logging.getLogger("tilefuse.autotune")
    monkeypatch.setattr(logger, "handlers", [])
    level = logger.level
    assert run.parse_args(["--autotune-timeline"]).autotune_timeline
    assert not run.parse_args([]).autotune_timeline
    try:
        run.log_autotune_timeline()
        assert logger.isEnabledFor(logging.DEBUG) and len(logger.handlers) == 1
    finally:
        logger.setLevel(level)  # also clears the loggers' cached levels
