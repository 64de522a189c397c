"""The model benchmark (bench/models.py): error measure and tolerances, failure handling, the
row summary and table, and a CPU smoke run of every zoo family through tilefuse (the Triton
interpreter), skipped with the reason where the family's library is not importable."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

from bench import backends, model_report, models, timing, zoo

CPU = torch.device("cpu")


# ---- error measure and tolerances ---------------------------------------------------------


def test_relative_error_finds_the_worst_output():
    ref = [torch.ones(10), torch.full((4,), 2.0)]
    err, where = models.relative_error([torch.ones(10), torch.full((4,), 2.2)], ref)
    assert err == pytest.approx(0.1) and where == "output 1"
    assert models.relative_error([r.clone() for r in ref], ref)[0] == 0.0


def test_relative_error_skips_negligible_outputs_but_not_wrong_shapes_or_nones():
    ref = [torch.ones(10), torch.full((4,), 1e-9)]
    assert models.relative_error([torch.ones(10), torch.zeros(4)], ref)[0] == 0.0
    assert models.relative_error([torch.ones(10), torch.zeros(5)], ref)[0] == math.inf
    assert models.relative_error([torch.ones(10), None], ref)[0] == math.inf
    # a zero gradient where eager has None (an unused output of a compiled graph), both ways
    with_none = [torch.ones(10), None]
    assert models.relative_error([torch.ones(10), torch.zeros(3)], with_none)[0] == 0.0
    assert models.relative_error(with_none, [torch.ones(10), torch.zeros(3)])[0] == 0.0
    assert models.relative_error([torch.ones(10), torch.ones(3)], with_none)[0] == math.inf
    nan3 = torch.full((3,), float("nan"))
    assert models.relative_error([torch.ones(10), nan3], with_none)[0] == math.inf
    assert models.relative_error([torch.ones(10)], ref)[0] == math.inf
    nan = torch.full((10,), float("nan"))
    assert models.relative_error([nan, torch.zeros(4)], ref)[0] == math.inf


def test_allowed_error_per_mode():
    assert models.allowed_error(models.TRAIN_FP32, None) == 1e-3
    assert models.allowed_error(models.INFER_BF16, 0.01) == pytest.approx(0.015)
    assert models.allowed_error(models.TRAIN_AMP, 0.02) == pytest.approx(0.03)
    assert models.allowed_error(models.INFER_BF16, None) is None


def test_time_limit_interrupts_and_restores():
    with pytest.raises(models.BackendTimeout, match="limit"):
        with models.time_limit(0.05):
            time.sleep(5)
    with models.time_limit(None):
        pass


# ---- one backend on a tiny model that needs no library ------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


TINY = zoo.ZooModel(
    "tiny", "conv + bn + linear", "torch", zoo.IMAGE, "classes", lambda smoke: TinyNet(),
    zoo._image(4, 8, 10), zoo._image(4, 8, 10),
)  # fmt: skip


class FakeSpec(backends.BackendSpec):
    """A column whose 'compiler' wraps the function in plain Python."""

    def __init__(self, make):
        super().__init__("fake", "fake", None)
        object.__setattr__(self, "make", make)

    def prepare(self, fn):
        return self.make(fn)


EAGER = object()


def _measure(mode, make, eager_error=EAGER):
    """``make``'s column on TINY; ``eager_error`` defaults to eager's own, measured first."""
    torch.manual_seed(0)
    pristine = TINY.make(True)
    inputs = TINY.inputs(CPU, True)
    reference = models.reference_outputs(TINY, pristine, inputs, mode)
    timer = models.SmokeTimer(CPU, quick=True)

    def column(spec, scale):
        return models.measure(TINY, pristine, inputs, mode, spec, timer, reference, scale,
                              timeout=60)  # fmt: skip

    if eager_error is EAGER:
        eager = column(backends.BackendSpec("eager", "eager", None), None)
        assert eager["error"] is None, eager["error"]
        eager_error = eager["rel_error"]
    return column(FakeSpec(make), eager_error)


@pytest.mark.parametrize("mode", models.MODES)
def test_measure_times_a_correct_backend(mode):
    r = _measure(mode, lambda fn: fn)
    assert r["error"] is None and r["ms"] > 0
    assert r["rel_error"] <= r["allowed_error"]


@pytest.mark.parametrize("mode", models.MODES)
def test_measure_records_a_wrong_result(mode):
    r = _measure(mode, lambda fn: lambda *a: fn(*a) * 1.5)
    assert r["ms"] is None
    assert r["error"].startswith("mismatch vs the fp32 reference: output ")


def test_training_check_sees_a_wrong_gradient():
    # the loss is right; only the gradient is scaled
    class Half(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 0.5

    r = _measure(models.TRAIN_FP32, lambda fn: lambda x, y: Half.apply(fn(x, y)))
    assert r["ms"] is None and "relative L2 error" in r["error"]


def test_measure_records_a_crash_and_the_bf16_modes_need_eager():
    def broken(fn):
        raise RuntimeError("codegen exploded")

    assert _measure(models.INFER_BF16, broken)["error"] == "RuntimeError: codegen exploded"
    r = _measure(models.INFER_BF16, lambda fn: fn, eager_error=None)
    assert r["ms"] is None and "no eager result" in r["error"]


def test_the_reference_is_fp32_and_bf16_inference_runs_in_bf16():
    pristine = TINY.make(True)
    x, y = TINY.inputs(CPU, True)
    ref = models.reference_outputs(TINY, pristine, (x, y), models.INFER_BF16)
    assert ref[0].dtype == torch.float32
    prepared = models.prepare(TINY, pristine, x, y, models.INFER_BF16)
    assert prepared.step(prepared.fn)()[0].dtype == torch.bfloat16
    assert next(pristine.parameters()).dtype == torch.float32  # copies, never the pristine


# ---- rows, table, CLI ---------------------------------------------------------------------


def _row(eager, inductor, tilefuse_ms, **extra):
    def res(ms, **kw):
        return {"ms": ms, "compile_s": None if ms is None else 1.0, "kernels": 3,
                "error": None, **kw}  # fmt: skip

    results = {
        "eager": res(eager),
        "inductor": res(inductor),
        "tilefuse": res(tilefuse_ms, **extra),
    }
    return model_report.summarize({"model": "m", "mode": "infer-bf16", "results": results})


def test_summarize_and_geomean():
    a = _row(2.0, 1.0, 4.0, tilefuse={"graphs_compiled": 1, "graphs_fallen_back": 0})
    b = _row(8.0, 2.0, 2.0)
    assert a["eager_ms"] == 2.0 and a["tilefuse_compile_s"] == 1.0
    assert a["speedups"] == {"inductor": 2.0, "tilefuse": 0.5}
    assert a["tilefuse_stats"]["graphs_compiled"] == 1 and a["error"] is None
    geo = model_report.geomean_speedups([a, b])
    assert geo["inductor"]["geomean"] == pytest.approx(math.sqrt(2.0 * 4.0))
    assert geo["tilefuse"]["geomean"] == pytest.approx(math.sqrt(0.5 * 4.0))
    failed = _row(2.0, 1.0, None, error="mismatch vs the fp32 reference: x")
    assert failed["speedups"]["tilefuse"] is None
    assert failed["error"] == "tilefuse: mismatch vs the fp32 reference: x"
    assert model_report.geomean_speedups([failed, b])["tilefuse"]["rows"] == 1


def test_table_shows_speedups_fallbacks_and_errors():
    data = {
        "created": "now",
        "machine": {"device": "GPU", "torch": "t", "triton": "tr", "tilefuse": "0.1"},
        "mode": {"timing": "do_bench"},
        "backends": {"inductor": {"usable": False, "reason": "no compiler"}},
        "rows": [
            _row(2.0, 1.0, 4.0, tilefuse={"graphs_compiled": 2, "graphs_fallen_back": 1}),
            _row(2.0, 1.0, None, error="RuntimeError: boom"),
            model_report.summarize({"model": "vit", "mode": "train-amp", "results": {},
                                    "error": "timm is not importable"}),
        ],
    }  # fmt: skip
    table = model_report.format_table(data)
    assert "skipped backend inductor: no compiler" in table
    assert "4.000 0.50x*" in table and "2/1fb" in table
    assert "m infer-bf16 / tilefuse: RuntimeError: boom" in table
    assert "vit train-amp: timm is not importable" in table
    assert "geomean speedup over eager, inductor: 2.000x (2 rows)" in table


def test_cuda_graph_columns_only_on_request():
    plain = [s.name for s in backends.specs(list(backends.FAMILIES))]
    assert not any(n.endswith("_cg") for n in plain)
    with_graphs = backends.specs(list(backends.FAMILIES), cuda_graphs=True)
    assert [s.name for s in with_graphs] == [*plain, "inductor_cg", "tilefuse_cg"]
    for spec in with_graphs[-2:]:
        assert spec.cuda_graphs and spec.compile_kwargs["mode"] == "reduce-overhead"
        assert spec.runs_on(models.KIND) and not spec.runs_on("memory")
    assert with_graphs[-1].compile_kwargs["backend"] == "tilefuse"
    assert dict(with_graphs[-1].env) == {"TILEFUSE_STRICT": "1"}
    only_tf = backends.specs(["eager", "tilefuse"], cuda_graphs=True)
    assert [s.name for s in only_tf][-1] == "tilefuse_cg" and "inductor_cg" not in {
        s.name for s in only_tf
    }
    assert models.parse_args(["--cudagraphs"]).cudagraphs
    assert not models.parse_args([]).cudagraphs


def test_bf16_modes_bring_eager_and_profiles_take_a_length():
    args = models.parse_args(["--profile", "bert", "--backends", "inductor,tilefuse"])
    assert args.backends == ["eager", "inductor", "tilefuse"]  # bf16's bound scales eager's
    train = models.parse_args(["--modes", "train-fp32", "--backends", "tilefuse"])
    assert train.backends == ["tilefuse"]
    later = models.parse_args(["--backends", "tilefuse,eager"])
    assert later.backends == ["eager", "tilefuse"]  # eager first: it sets the bound
    assert models.parse_args(["--profile", "vit", "--profile-top", "50"]).profile_top == 50
    for wrong in (["--profile", "vit", "--profile-top", "0"], ["--profile-top", "5"]):
        with pytest.raises(SystemExit):
            models.parse_args(wrong)


def test_cuda_graph_columns_in_the_rows_and_table():
    row = _row(2.0, 1.0, 4.0)
    row["results"]["inductor_cg"] = {"ms": 0.5, "compile_s": 2.0, "kernels": 1, "error": None}
    row["results"]["tilefuse_cg"] = {
        "ms": 0.25, "compile_s": 1.5, "kernels": 1, "error": None,
        "tilefuse": {"graphs_compiled": 1, "cuda_graph_fallbacks": 1},
    }  # fmt: skip
    model_report.summarize(row)
    assert row["tilefuse_cg_ms"] == 0.25 and row["inductor_cg_compile_s"] == 2.0
    assert row["speedups"]["inductor_cg"] == 4.0 and row["speedups"]["tilefuse_cg"] == 8.0
    plain = _row(2.0, 1.0, 4.0)
    assert "tilefuse_cg_ms" not in plain and "tilefuse_cg" not in plain["speedups"]
    data = {
        "created": "now",
        "machine": {"device": "GPU", "torch": "t", "triton": "tr", "tilefuse": "0.1"},
        "mode": {"timing": "do_bench"},
        "backends": {},
        "rows": [row, plain],
    }
    table = model_report.format_table(data)
    assert "inductor_cg ms" in table and "tilefuse_cg ms" in table
    assert "0.250 8.00x*" in table  # a graph of tilefuse_cg ran without CUDA graphs
    assert "geomean speedup over eager, tilefuse_cg: 8.000x (1 rows)" in table
    data["rows"] = [plain]
    assert "_cg" not in model_report.format_table(data)


@pytest.mark.parametrize("third_call_right", [True, False])
def test_cuda_graph_columns_are_checked_on_their_third_call(third_call_right):
    """The first call of a reduce-overhead column warms up and the second captures: the
    outputs checked are the third call's (a replay)."""

    def make(fn):
        calls = []

        def run(*args):
            calls.append(1)
            right = (len(calls) == 3) == third_call_right
            return fn(*args) if right else fn(*args) * 1.5

        return run

    torch.manual_seed(0)
    pristine = TINY.make(True)
    inputs = TINY.inputs(CPU, True)
    reference = models.reference_outputs(TINY, pristine, inputs, models.TRAIN_FP32)
    spec = FakeSpec(make)
    object.__setattr__(spec, "cuda_graphs", True)
    timer = models.SmokeTimer(CPU, quick=True)
    r = models.measure(TINY, pristine, inputs, models.TRAIN_FP32, spec, timer, reference,
                       None, timeout=60)  # fmt: skip
    if third_call_right:
        assert r["error"] is None and r["ms"] is not None
    else:
        assert r["ms"] is None and "mismatch" in r["error"]


def test_profiles_side_by_side():
    row = _row(2.0, 1.0, 4.0)
    row["results"]["eager"]["profile"] = [{"name": "gemm_kernel", "ms": 1.5, "calls": 2}]
    row["results"]["tilefuse"]["profile"] = [{"name": "triton_fused", "ms": 0.5, "calls": 1}]
    text = model_report.format_profiles({"rows": [row]})
    line = [ln for ln in text.splitlines() if "gemm_kernel" in ln][0]
    assert "triton_fused" in line and "1.500 x2" in line


def test_profiles_sum_every_kernel_by_family():
    names = {
        "sm90_xmma_gemm_bf16bf16_bf16f32": "gemm",
        "void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816fprop>": "convolution",
        "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>": "attention",
        "tf_reduction_12": "generated",
        "triton_per_fused_add_0": "generated",
        "Memset (Device)": "memset/copy",
        "void at::native::vectorized_elementwise_kernel<4>": "aten",
        "void at_cuda_detail::cub::DeviceRadixSortOnesweepKernel": "aten",
        "something_else": "other",
    }
    for name, family in names.items():
        assert models.kernel_family(name) == family, name
    row = _row(2.0, 1.0, 4.0)
    row["results"]["eager"]["profile"] = [{"name": "gemm_kernel", "ms": 1.5, "calls": 2}]
    row["results"]["eager"]["profile_families"] = {
        "gemm": {"ms": 1.5, "calls": 2},
        "all": {"ms": 1.5, "calls": 2},
    }
    row["results"]["tilefuse"]["profile"] = [{"name": "tf_pointwise_0", "ms": 0.5, "calls": 1}]
    row["results"]["tilefuse"]["profile_families"] = {
        "generated": {"ms": 0.5, "calls": 1},
        "all": {"ms": 0.5, "calls": 1},
    }
    lines = model_report.format_profiles({"rows": [row]}).splitlines()
    total = [ln for ln in lines if ln.startswith("all ") and "x" in ln][-1]
    assert "1.500 x2" in total and "0.500 x1" in total
    assert any(ln.startswith("gemm") and "1.500 x2" in ln for ln in lines)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="known: resnet18"):
        zoo.select(["resnet18", "nope"])
    with pytest.raises(SystemExit):
        models.parse_args(["--modes", "train-fp16"])
    assert models.main(["--smoke", "--models", "nope", "--device", "cpu"]) == 2


def test_smoke_defaults_leave_inductor_out():
    assert models.parse_args(["--smoke"]).backends == ["eager", "tilefuse"]
    assert models.parse_args([]).backends == list(backends.FAMILIES)
    assert models.parse_args(["--profile", "gpt2"]).models == ["gpt2"]


def test_batch_sets_every_models_batch():
    with pytest.raises(SystemExit):
        models.parse_args(["--batch", "0"])
    assert models.parse_args(["--batch", "1"]).batch == 1
    gpt2 = zoo.with_batch(zoo.select(["gpt2"])[0], 1)
    assert gpt2.dims(False)["batch"] == gpt2.dims(True)["batch"] == 1
    assert gpt2.shape(False).startswith("1x")


class ScriptedTimer(models.SmokeTimer):
    """Answers each ``median_ms`` from a script and records which backend's step ran."""

    def __init__(self, script):
        super().__init__(CPU, quick=True)
        object.__setattr__(self, "script", list(script))
        object.__setattr__(self, "order", [])

    def median_ms(self, fn, grad_to_none=None):
        self.order.append(fn())
        return self.script.pop(0)


def test_more_rounds_interleave_backends_and_take_the_median():
    """Each backend is timed again, in turn (a (load) burst on a shared host lands on
    one round, not on one backend), and keeps the median of its rounds."""
    row = {"results": {"a": {"ms": 5.0}, "b": {"ms": 1.0}}, "error": None}
    prepared = models.Prepared(nn.Identity(), lambda: None, lambda fn: fn, [])
    timed = [("a", prepared, lambda: "a"), ("b", prepared, lambda: "b")]
    timer = ScriptedTimer([1.0, 2.0, 1.5, 9.0])
    models._more_rounds(row, timed, timer, rounds=3)
    assert timer.order == ["a", "b", "a", "b"] and timed == []
    assert row["results"]["a"] == {"ms": 1.5, "ms_rounds": [5.0, 1.0, 1.5]}
    assert row["results"]["b"] == {"ms": 2.0, "ms_rounds": [1.0, 2.0, 9.0]}
    assert models.parse_args([]).rounds == models.DEFAULT_ROUNDS
    assert models.parse_args(["--smoke"]).rounds == 1


def test_smoke_timer_is_one_call():
    calls = []
    assert models.SmokeTimer(CPU).median_ms(lambda: calls.append(1)) >= 0
    assert calls == [1] and isinstance(models.SmokeTimer(CPU), timing.Timer)


# ---- the CPU smoke of every family, through tilefuse ------------------------------------


def _tilefuse_or_skip():
    reason = backends.unusable_reason(backends.specs(["tilefuse"])[0], CPU)
    if reason:
        pytest.skip(f"tilefuse cannot run on the CPU here: {reason}")


def _smoke(tmp_path, name, modes, families="eager,tilefuse"):
    missing = zoo.library_missing(zoo.BY_NAME[name])
    if missing:
        pytest.skip(missing)
    if "tilefuse" in families:
        _tilefuse_or_skip()
    args = models.parse_args(["--smoke", "--device", "cpu", "--models", name, "--modes", modes,
                              "--backends", families, "--out", str(tmp_path)])  # fmt: skip
    paths = []
    data = models.run_zoo(args, paths)
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(data))
    return data["rows"]


@pytest.mark.parametrize("name", [m.name for m in zoo.MODELS])
def test_smoke_family_bf16_inference(tmp_path, name):
    (row,) = _smoke(tmp_path, name, models.INFER_BF16)
    assert row["error"] is None, row["error"]
    assert row["eager_ms"] > 0 and row["tilefuse_ms"] > 0 and row["tilefuse_compile_s"] > 0
    assert row["tilefuse_stats"]["graphs_compiled"] >= 1
    assert row["tilefuse_stats"]["graphs_fallen_back"] == 0
    tf = row["results"]["tilefuse"]
    assert tf["rel_error"] <= 1.5 * row["results"]["eager"]["rel_error"] or tf["rel_error"] <= 1e-3


@pytest.mark.parametrize("name", ["resnet18", "gpt2"])
def test_smoke_training_fp32(tmp_path, name):
    (row,) = _smoke(tmp_path, name, models.TRAIN_FP32)
    assert row["error"] is None, row["error"]
    assert row["results"]["tilefuse"]["rel_error"] <= 1e-3
    assert row["tilefuse_stats"]["graphs_compiled"] >= 2  # forward and backward
    assert row["tilefuse_stats"]["graphs_fallen_back"] == 0


def test_smoke_training_under_autocast_eager(tmp_path):
    (row,) = _smoke(tmp_path, "bert", models.TRAIN_AMP, families="eager")
    assert row["error"] is None, row["error"]
    assert 0 < row["results"]["eager"]["rel_error"] < 0.5


def test_smoke_training_under_autocast_tilefuse(tmp_path):
    """Autocast stores bf16 GEMMs as float32: the extern GEMM must not write in place."""
    (row,) = _smoke(tmp_path, "bert", models.TRAIN_AMP)
    assert row["error"] is None, row["error"]
    assert row["tilefuse_stats"]["graphs_compiled"] >= 2  # forward and backward
    assert row["tilefuse_stats"]["graphs_fallen_back"] == 0


def test_top_kernels_on_the_cpu_lists_the_costliest_ops():
    module = TinyNet()
    x = torch.randn(4, 3, 8, 8)
    top = models.top_kernels(lambda: module(x), [], models.SmokeTimer(CPU))
    assert 0 < len(top) <= models.PROFILE_TOP
    assert all(e["ms"] > 0 and e["calls"] > 0 for e in top)
    assert [e["ms"] for e in top] == sorted((e["ms"] for e in top), reverse=True)
    assert any("conv" in e["name"] for e in top)
