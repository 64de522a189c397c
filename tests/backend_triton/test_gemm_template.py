"""The Triton GEMM template and its choice provider, differential against the reference.

CPU tests run kernels through Triton's interpreter (``TRITON_INTERPRET=1``, set
for each of them) with 16x16x16 tiles; ``gpu`` tests run the device's real
search space on CUDA.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from importlib.metadata import entry_points

import pytest
import torch

from tests.backend_triton.gemm_helpers import (
    DTYPES,
    TF32_TOLERANCE,
    check_choice,
    make_case,
)
from tilefuse import plugin
from tilefuse.codegen import kernel_cache
from tilefuse.errors import CacheError
from tilefuse_triton.gemm import (
    PROVIDER,
    DeviceTraits,
    GemmConfig,
    TritonGemmChoice,
    Unsupported,
    kernel_name,
    module_cache,
    render_gemm,
    search_space,
)
from tilefuse_triton.gemm.config import GROUP_VARIANT_CONFIGS, MAX_TILE_AREA_RATIO

# CPU tests run their kernels through Triton's interpreter, switched on per test.
interpreter = pytest.mark.usefixtures("triton_interpreter")
TINY = GemmConfig(16, 16, 16, num_stages=1, num_warps=1, group_m=2)
SIZES = (1, 17, 33)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tf-cache"))


@pytest.fixture
def triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def tiny_choice(case, config: GemmConfig = TINY) -> TritonGemmChoice:
    return TritonGemmChoice(
        kernel_name(case.op, config), case.op, config, case.specs, case.layout, case.epilogue
    )


def step(kind: str, operand: int | None = None, value: float | None = None):
    return plugin.EpilogueStep(kind, operand=operand, value=value)


# ---------------------------------------------------------------- interpreter: mm / bmm


@interpreter
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", SIZES)
def test_mm_odd_shapes_float32(m, n, k):
    case = make_case("mm", m, n, k)
    check_choice(tiny_choice(case), case)


@interpreter
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_mm_dtypes_and_transposed_operands(dtype, transpose_a, transpose_b):
    case = make_case(
        "mm", 64, 48, 40, dtype=DTYPES[dtype], transpose_a=transpose_a, transpose_b=transpose_b
    )
    check_choice(tiny_choice(case), case)


@interpreter
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(17, 33, 1), (1, 17, 33), (33, 17, 17)])
def test_bmm(dtype, shape):
    m, n, k = shape
    case = make_case("bmm", m, n, k, batch=3, dtype=DTYPES[dtype], transpose_b=True)
    check_choice(tiny_choice(case), case)


@interpreter
def test_bmm_with_permuted_batch_strides():
    case = make_case("bmm", 17, 20, 24, batch=3)
    case.inputs[0] = case.inputs[0].permute(1, 0, 2).contiguous().permute(1, 0, 2)
    check_choice(tiny_choice(case), case)


@interpreter
def test_empty_k_gives_the_epilogue_of_zero():
    case = make_case("addmm", 5, 7, 0, steps=[step("mul_scalar", value=3.0)])
    check_choice(tiny_choice(case), case)


@interpreter
def test_empty_output_launches_nothing():
    case = make_case("mm", 0, 7, 5)
    check_choice(tiny_choice(case), case)
    assert case.out.shape == (0, 7)


# ------------------------------------------------------------ interpreter: addmm / epilogue


@interpreter
@pytest.mark.parametrize("bias_shape", ["n", "mn"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_relu_of_addmm_is_one_kernel(bias_shape, dtype):
    case = make_case(
        "addmm", 33, 17, 20, dtype=DTYPES[dtype], bias_shape=bias_shape, steps=[step("relu")]
    )
    choice = tiny_choice(case)
    assert choice.source.count("@triton.jit") == 1
    assert choice.source.count("tl.store(") == 1
    check_choice(choice, case)
    assert (case.out >= 0).all()


UNARY_KINDS = ("relu", "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh")


@interpreter
@pytest.mark.parametrize("kind", UNARY_KINDS)
def test_unary_epilogue_steps(kind):
    # scale first so the activations see values well away from 0 as well
    steps = [step("mul_scalar", value=2.5), step(kind)]
    case = make_case("mm", 33, 17, 24, steps=steps)
    check_choice(tiny_choice(case), case)


@interpreter
@pytest.mark.parametrize("op", ["mm", "bmm"])
@pytest.mark.parametrize("kind", ["add_bias_n", "add_bias_m", "add_matrix"])
def test_operand_epilogue_steps(op, kind):
    case = make_case(op, 17, 33, 20, batch=2, steps=[step(kind, operand=0)], operand_kinds=[kind])
    check_choice(tiny_choice(case), case)


@interpreter
@pytest.mark.parametrize("broadcast", ["rows", "columns"])
def test_add_matrix_operand_given_as_a_broadcast_view(broadcast):
    case = make_case("mm", 17, 33, 20, steps=[step("add_matrix", operand=0)])
    gen = torch.Generator().manual_seed(1)
    if broadcast == "rows":
        operand = torch.randn(33, generator=gen).expand(17, 33)
    else:
        operand = torch.randn(17, 1, generator=gen).expand(17, 33)
    case.inputs.append(operand)
    case.epilogue = plugin.Epilogue(case.epilogue.steps, (plugin.TensorSpec.of(operand),))
    choice = tiny_choice(case)
    # a 1-d load along the one dimension the operand varies in, not a full tile
    expected = "+ rn * e0_sn" if broadcast == "rows" else "+ rm * e0_sm"
    assert expected in choice.source
    check_choice(choice, case)


@interpreter
@pytest.mark.parametrize(
    "dtype,out_dtype", [("bfloat16", "float32"), ("float32", "bfloat16"), ("float16", "float16")]
)
def test_epilogue_chain_with_dtype_cast(dtype, out_dtype):
    steps = [
        step("add_matrix", operand=1),
        step("mul_scalar", value=-0.5),
        step("add_bias_m", operand=0),
        step("gelu_tanh"),
        step("add_matrix", operand=1),  # the same operand read twice: loaded once
    ]
    case = make_case(
        "addmm",
        40,
        24,
        33,
        dtype=DTYPES[dtype],
        steps=steps,
        operand_kinds=["add_bias_m", "add_matrix"],
        out_dtype=DTYPES[out_dtype],
    )
    choice = tiny_choice(case)
    assert choice.source.count("e2 = tl.load") == 1
    check_choice(choice, case)


# ----------------------------------------------------------------------- provider


def test_provider_is_registered_under_the_choices_entry_point():
    (ep,) = [e for e in entry_points(group=plugin.CHOICES_GROUP) if e.name == "triton"]
    provider = ep.load()
    assert provider is PROVIDER
    assert isinstance(provider, plugin.ChoiceProvider)
    assert (provider.name, provider.api_version) == ("triton", plugin.API_VERSION)


def test_supports(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert PROVIDER.supports("mm", "cuda:0") and PROVIDER.supports("bmm", "cuda")
    assert not PROVIDER.supports("mm", "cpu")
    assert not PROVIDER.supports("conv2d", "cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert PROVIDER.supports("addmm", "cpu")


@interpreter
def test_choices_first_is_the_heuristic_and_all_are_correct_and_picklable():
    case = make_case("addmm", 33, 17, 20, steps=[step("silu")])
    choices = list(PROVIDER.choices("addmm", case.specs, case.layout, case.epilogue))
    assert choices and all(isinstance(c, plugin.Choice) for c in choices)
    names = [c.name for c in choices]
    assert len(set(names)) == len(names)
    assert all(n.startswith("triton_addmm_") for n in names)
    first = search_space(33, 17, 20, 1, "float32", DeviceTraits.interpreter())[0]
    assert choices[0].config == first
    for choice in choices:
        clone = pickle.loads(pickle.dumps(choice))
        clone.compile()
        check_choice(clone, case)


@interpreter
def test_autotune_mode_off_offers_only_the_heuristic(monkeypatch):
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "off")
    case = make_case("mm", 64, 64, 64)
    assert len(list(PROVIDER.choices("mm", case.specs, case.layout, case.epilogue))) == 1


@interpreter
def test_unservable_requests_yield_no_choices_and_say_why():
    case = make_case("mm", 8, 8, 8)
    bad = plugin.Epilogue((step("softplus"),))
    assert list(PROVIDER.choices("mm", case.specs, case.layout, bad)) == []
    assert "softplus" in PROVIDER.accepts("mm", case.specs, case.layout, bad).reason
    inf = plugin.Epilogue((step("mul_scalar", value=math.inf),))
    assert list(PROVIDER.choices("mm", case.specs, case.layout, inf)) == []
    assert not PROVIDER.accepts("mm", case.specs, case.layout, inf).ok
    assert PROVIDER.accepts("mm", case.specs, case.layout, case.epilogue).ok
    mixed = (case.specs[0], plugin.TensorSpec((8, 8), (8, 1), "float16", "cpu"))
    assert "share" in PROVIDER.accepts("mm", mixed, case.layout, case.epilogue).reason
    wrong = plugin.Epilogue((step("add_matrix", operand=0),), (case.specs[0],))
    wrong_specs = case.specs + (plugin.TensorSpec((3, 8), (8, 1), "float32", "cpu"),)
    with pytest.raises(Unsupported, match="broadcast"):
        render_gemm("mm", TINY, wrong, wrong_specs, case.layout)


@interpreter
@pytest.mark.parametrize(
    ("op", "steps", "kinds"),
    [
        ("mm", [step("gelu_erf")], []),
        ("addmm", [step("relu"), step("mul_scalar", value=0.5)], []),
        ("mm", [step("add_matrix", operand=0), step("silu")], ["add_matrix"]),
        ("bmm", [step("add_bias_n", operand=0), step("tanh")], ["add_bias_n"]),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vendor_product_then_the_epilogue_as_one_pass(op, steps, kinds, dtype):
    case = make_case(op, 33, 17, 20, batch=2, dtype=DTYPES[dtype], steps=steps,
                     operand_kinds=kinds, transpose_b=True)  # fmt: skip
    choice = TritonGemmChoice(
        kernel_name(op, TINY, vendor_first=True), op, TINY, case.specs, case.layout,
        case.epilogue, vendor_first=True,
    )  # fmt: skip
    assert "torch.mm(a, b, out=out)" in choice.source or "torch.bmm(" in choice.source
    assert "tl.dot" not in choice.source
    check_choice(choice, case)
    assert choice.cpp_launch() is None  # the C++ wrapper cannot launch the vendor product


def test_the_unfused_pass_is_offered_second_with_an_epilogue_beyond_a_bias(monkeypatch):
    gelu = make_case("mm", 64, 64, 64, steps=[step("gelu_erf")])
    bare = make_case("mm", 64, 64, 64)
    for mode, offered in (("max", True), ("quick", True), ("default", True), ("off", False)):
        monkeypatch.setenv("TILEFUSE_AUTOTUNE", mode)
        choices = PROVIDER.choices("mm", gelu.specs, gelu.layout, gelu.epilogue)
        assert [i for i, c in enumerate(choices) if c.vendor_first] == ([1] if offered else [])
        plain = PROVIDER.choices("mm", bare.specs, bare.layout, bare.epilogue)
        assert not any(c.vendor_first for c in plain)
        bias = make_case("addmm", 64, 64, 64)  # the vendor's own addmm is extern already
        assert not any(c.vendor_first for c in PROVIDER.choices(
            "addmm", bias.specs, bias.layout, bias.epilogue))  # fmt: skip


# ----------------------------------------------------------- search space / rendering


def test_hopper_space_for_a_large_bf16_gemm():
    space = search_space(4096, 4096, 4096, 1, "bfloat16", DeviceTraits.hopper())
    assert kernel_name("mm", space[0]) == "triton_mm_128x256x64_s4_w8_g8"
    assert all(c.smem_bytes(2) <= DeviceTraits.hopper().smem_bytes for c in space)
    assert len(space) == len(set(space)) > 1


def test_small_shapes_get_small_tiles_and_fill_the_device():
    space = search_space(17, 1, 255, 1, "float16", DeviceTraits.hopper(), mode="max")
    assert all(c.block_m <= 32 and c.block_n == 16 and c.block_k <= 256 for c in space)
    pick = search_space(1024, 1024, 1024, 1, "bfloat16", DeviceTraits.hopper())[0]
    assert (1024 // pick.block_m) * (1024 // pick.block_n) >= 64


def test_shared_memory_limits_the_ampere_consumer_space():
    small = DeviceTraits("cuda", (8, 6), 84, 101376)
    space = search_space(4096, 4096, 4096, 1, "float16", small, mode="max")
    assert space and all(c.smem_bytes(2) <= 101376 for c in space)


def test_tf32_only_for_float32_when_allowed():
    fp32 = search_space(512, 512, 512, 1, "float32", DeviceTraits.hopper(), tf32=True)
    assert all(c.tf32 and c.tag().endswith("_tf32") for c in fp32)
    bf16 = search_space(512, 512, 512, 1, "bfloat16", DeviceTraits.hopper(), tf32=True)
    assert not any(c.tf32 for c in bf16)
    a = plugin.TensorSpec((64, 64), (64, 1), "float32", "cuda:0")
    config = fp32[0]
    assert 'input_precision="tf32"' in render_gemm("mm", config, plugin.Epilogue(), (a, a), a)
    ieee = GemmConfig(64, 64, 32, 3, 4)
    assert 'input_precision="ieee"' in render_gemm("mm", ieee, plugin.Epilogue(), (a, a), a)


def test_interpreter_render_upcasts_bfloat16_only_there():
    cpu = plugin.TensorSpec((32, 32), (32, 1), "bfloat16", "cpu")
    gpu = plugin.TensorSpec((32, 32), (32, 1), "bfloat16", "cuda:0")
    assert "a = a.to(tl.float32)" in render_gemm("mm", TINY, plugin.Epilogue(), (cpu, cpu), cpu)
    assert "a.to(tl.float32)" not in render_gemm("mm", TINY, plugin.Epilogue(), (gpu, gpu), gpu)


def test_source_is_written_once_by_content_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    first = kernel_cache.store_source(module_cache.KIND, "x = 1\n")
    again = kernel_cache.store_source(module_cache.KIND, "x = 1\n")
    other = kernel_cache.store_source(module_cache.KIND, "x = 2\n")
    assert first == again != other and first.read_text().endswith("\nx = 1\n")
    assert sorted((tmp_path / "triton_gemm").rglob("*.py")) == sorted([first, other])


def test_unwritable_cache_dir_is_a_typed_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(blocker))
    with pytest.raises(CacheError, match="TILEFUSE_CACHE_DIR"):
        module_cache.load_module("x = 3\n", "k")


# ---------------------------------------------------------------------------- GPU

GPU_SIZES = (1, 17, 255, 1000)


def heuristic_choice(case):
    choices = list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))
    assert choices, PROVIDER.accepts(case.op, case.specs, case.layout, case.epilogue).reason
    return choices


@pytest.mark.gpu
@pytest.mark.parametrize("m", GPU_SIZES)
@pytest.mark.parametrize("n", GPU_SIZES)
@pytest.mark.parametrize("k", GPU_SIZES)
def test_gpu_mm_odd_shapes_bf16(m, n, k):
    case = make_case("mm", m, n, k, dtype=torch.bfloat16, device="cuda", transpose_b=(k == 17))
    check_choice(heuristic_choice(case)[0], case)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("size", GPU_SIZES)
def test_gpu_dtypes(dtype, size):
    case = make_case("mm", size, 255, 1000, dtype=DTYPES[dtype], device="cuda", transpose_a=True)
    check_choice(heuristic_choice(case)[0], case)


@pytest.mark.gpu
def test_gpu_tf32_when_torch_allows_it(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    case = make_case("mm", 1000, 1000, 1000, device="cuda")
    choice = heuristic_choice(case)[0]
    assert choice.name.endswith("_tf32") and 'input_precision="tf32"' in choice.source
    check_choice(choice, case, tolerance=TF32_TOLERANCE)


@pytest.mark.gpu
def test_gpu_every_hopper_config_on_a_large_bf16_gemm(monkeypatch):
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "max")
    case = make_case("mm", 2048, 4096, 1024, dtype=torch.bfloat16, device="cuda")
    for choice in heuristic_choice(case):
        check_choice(choice, case)


@pytest.mark.gpu
@pytest.mark.parametrize("bias_shape", ["n", "mn"])
def test_gpu_fused_addmm_gelu_residual_bf16(bias_shape):
    steps = [step("gelu_erf"), step("add_matrix", operand=0), step("mul_scalar", value=0.5)]
    case = make_case(
        "addmm",
        1000,
        1024,
        255,
        dtype=torch.bfloat16,
        device="cuda",
        bias_shape=bias_shape,
        steps=steps,
        operand_kinds=["add_matrix"],
    )
    check_choice(heuristic_choice(case)[0], case)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", UNARY_KINDS + ("add_bias_n", "add_bias_m"))
def test_gpu_bmm_epilogues(kind):
    operand = 0 if kind.startswith("add") else None
    case = make_case(
        "bmm",
        255,
        1000,
        17,
        batch=3,
        dtype=torch.float16,
        device="cuda",
        steps=[step(kind, operand=operand)],
        operand_kinds=[kind] if operand is not None else [],
    )
    check_choice(heuristic_choice(case)[0], case)


def test_max_space_leaves_out_tiles_far_too_small_for_a_large_product_only():
    hopper = DeviceTraits.hopper()
    large = search_space(4096, 11008, 4096, 1, "bfloat16", hopper, mode="max")
    areas = {c.block_m * c.block_n for c in large}
    assert min(areas) >= 128 * 256 // MAX_TILE_AREA_RATIO
    assert (64, 128) in {(c.block_m, c.block_n) for c in large}
    # a problem no large tile fills keeps its small tiles: there they are the ones that fill
    small = search_space(512, 512, 4096, 1, "bfloat16", hopper, mode="max")
    assert min(c.block_m * c.block_n for c in small) <= 32 * 32


def test_max_space_varies_the_launch_order_of_the_largest_tiles_only():
    default = search_space(4096, 4096, 4096, 1, "bfloat16", DeviceTraits.hopper())
    space = search_space(4096, 4096, 4096, 1, "bfloat16", DeviceTraits.hopper(), mode="max")
    plain = [c for c in space if c.group_m == 8]
    varied = [c for c in space if c.group_m != 8]
    assert space[0] == default[0] and len(space) == len(set(space))
    assert {replace(c, group_m=8) for c in varied} == set(plain[:GROUP_VARIANT_CONFIGS])
    assert len(varied) == 2 * GROUP_VARIANT_CONFIGS
