"""Every template family renders, and the text says what it should (no compiler needed)."""

from __future__ import annotations

import itertools
import pickle

import pytest

from tests.backend_cuda.cases import make_case
from tilefuse.plugin import TensorSpec
from tilefuse_cuda.configs import ALL_CONFIGS, GemmConfig, configs_for, heuristic
from tilefuse_cuda.problem import Dims, Unsupported, analyse
from tilefuse_cuda.render import render

EPILOGUES = {
    "plain": (),
    "bias_n_relu": (("add_bias_n", "n"), ("relu",)),
    "bias_m_gelu_erf": (("add_bias_m", "m"), ("gelu_erf",)),
    "gelu_tanh_scale": (("gelu_tanh",), ("mul_scalar", 0.125)),
    "silu_residual": (("silu",), ("add_matrix", "mn")),
    "sigmoid_tanh": (("sigmoid",), ("tanh",)),
}
LAYOUTS = list(itertools.product((False, True), repeat=3))  # a_col, b_col, d_col
SCHEDULE_CONFIGS = {
    "cooperative": GemmConfig("cooperative", (128, 256, 64), (2, 1)),
    "pingpong": GemmConfig("pingpong", (64, 128, 64), (1, 1)),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULE_CONFIGS))
@pytest.mark.parametrize("op", ["mm", "addmm", "bmm"])
@pytest.mark.parametrize("epilogue", sorted(EPILOGUES))
def test_every_family_renders(schedule, op, epilogue):
    config = SCHEDULE_CONFIGS[schedule]
    for a_col, b_col, d_col in LAYOUTS:
        case = make_case(
            op, 64, 128, 256, batch=3, a_col=a_col, b_col=b_col, d_col=d_col,
            steps=EPILOGUES[epilogue],
        )  # fmt: skip
        problem, _ = analyse(case.op, case.specs, case.layout, case.epilogue)
        text = render(problem, config, "4.2.0.0")
        kernel = "Cooperative" if schedule == "cooperative" else "Pingpong"
        assert f"cutlass::gemm::KernelTmaWarpSpecialized{kernel}" in text
        tm, tn, tk = config.tile
        assert f"using TileShape = Shape<_{tm}, _{tn}, _{tk}>;" in text
        assert (
            f"using ClusterShape = Shape<_{config.cluster[0]}, _{config.cluster[1]}, _1>;" in text
        )
        assert ("LayoutA = cutlass::layout::ColumnMajor" in text) == a_col
        # CUTLASS's B is (N, K): a column-major torch b[K, N] is K-major, CUTLASS ColumnMajor.
        assert ("LayoutB = cutlass::layout::ColumnMajor" in text) == b_col
        assert ("LayoutD = cutlass::layout::ColumnMajor" in text) == d_col
        assert "{%" not in text and "{{ " not in text
        steps = EPILOGUES[epilogue]
        kinds = [s[0] for s in steps]
        assert ("Sm90RowBroadcast" in text) == ("add_bias_n" in kinds or op == "addmm")
        assert ("Sm90ColBroadcast" in text) == ("add_bias_m" in kinds)
        assert ("Sm90SrcFetch<ElementC>" in text) == ("add_matrix" in kinds)
        assert ("using ElementC = void;" in text) == ("add_matrix" not in kinds)
        for kind, functor in [
            ("relu", "struct Relu"),
            ("gelu_erf", "erff("),
            ("gelu_tanh", "0.044715f"),
            ("silu", "struct Silu"),
            ("sigmoid", "struct Sigmoid"),
            ("tanh", "struct Tanh"),
            ("mul_scalar", "float(0x1.0000000000000p-3)"),
        ]:
            assert (functor in text) == (kind in kinds), kind
        # The visitor tree nests one EVT node per step, plus addmm's bias, plus the cast.
        assert text.count("fusion::Sm90EVT<") == len(steps) + (op == "addmm") + 1


@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_cast_is_the_output_element(out_dtype):
    case = make_case("mm", 64, 64, 64, out_dtype=out_dtype)
    problem, _ = analyse(case.op, case.specs, case.layout, case.epilogue)
    text = render(problem, SCHEDULE_CONFIGS["pingpong"], "4.2.0.0")
    cpp = {"float32": "float", "float16": "cutlass::half_t"}[out_dtype]
    assert f"using ElementD = {cpp};" in text
    assert "using ElementA = cutlass::bfloat16_t;" in text


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (dict(m=64, n=64, k=17), "multiples of 8"),  # row-major A: K must be a multiple of 8
        (dict(m=64, n=17, k=64), "multiples of 8"),  # row-major B and D: N
        (dict(m=17, n=64, k=64, a_col=True), "multiples of 8"),
        (dict(m=64, n=64, k=64, dtype="float32"), "bf16 or fp16"),
        (dict(m=0, n=64, k=64), "zero-size"),
    ],
)
def test_unservable_requests_say_why(kwargs, reason):
    case = make_case("mm", **kwargs)
    with pytest.raises(Unsupported, match=reason):
        analyse(case.op, case.specs, case.layout, case.epilogue)


def test_two_matrix_operands_are_refused():
    case = make_case("mm", 64, 64, 64, steps=(("add_matrix", "mn"), ("add_matrix", "mn")))
    with pytest.raises(Unsupported, match="one"):
        analyse(case.op, case.specs, case.layout, case.epilogue)


def test_odd_m_is_served_with_row_major_operands():
    case = make_case("mm", 1, 64, 64, steps=(("add_bias_m", "m"),))
    problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
    assert dims == Dims(1, 64, 64, 1)
    assert problem.vectors[0].role in ("row", "col")


def test_addmm_matrix_bias_reads_c():
    case = make_case("addmm", 64, 64, 64)
    bias = TensorSpec((64, 64), (64, 1), "bfloat16", "cuda")
    problem, _ = analyse("addmm", (bias, *case.specs[1:]), case.layout, case.epilogue)
    assert problem.source is not None and problem.source.index == 0


def test_configs_heuristic_first_and_valid():
    for dims in (Dims(1, 4096, 4096, 1), Dims(8192, 8192, 8192, 1), Dims(300, 300, 64, 1)):
        configs = configs_for(dims)
        assert configs[0] == heuristic(dims)
        assert len(set(configs)) == len(configs)
        assert set(configs[1:]) <= set(ALL_CONFIGS)
    with pytest.raises(ValueError, match="M % 128"):
        GemmConfig("cooperative", (64, 128, 64))


def test_choices_are_picklable_and_named_stably():
    from tilefuse_cuda.provider import CutlassGemmChoice

    case = make_case("bmm", 128, 256, 64, batch=2, steps=(("relu",),))
    problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
    choice = CutlassGemmChoice(problem, ALL_CONFIGS[0], dims)
    clone = pickle.loads(pickle.dumps(choice))
    assert clone.name == choice.name == "cutlass3x_sm90_bmm_bf16_aKNN_bf16_coop_128x256x64_c2x1"
    assert clone.problem == choice.problem


def test_swizzle_reaches_the_tile_scheduler_and_the_name():
    case = make_case("mm", 256, 256, 64)
    problem, _ = analyse(case.op, case.specs, case.layout, case.epilogue)
    plain = render(problem, GemmConfig("cooperative", (256, 128, 64), (2, 1)), "4.2.0")
    swizzled_config = GemmConfig("cooperative", (256, 128, 64), (2, 1), swizzle=8)
    swizzled = render(problem, swizzled_config, "4.2.0")
    assert "args.scheduler.max_swizzle_size = 1;" in plain
    assert "args.scheduler.max_swizzle_size = 8;" in swizzled
    assert swizzled_config.tag() == "coop_256x128x64_c2x1_sw8"
    with pytest.raises(ValueError, match="swizzle must be"):
        GemmConfig("cooperative", (256, 128, 64), (2, 1), swizzle=3)
