"""CUTLASS kernels against eager PyTorch on an sm_90 GPU (``-m gpu``).

Every family and every epilogue kind runs over odd sizes; the reference is the
float32 GEMM of the same inputs followed by ``Epilogue.apply_reference``.
"""

from __future__ import annotations

import math

import pytest

from tests.backend_cuda.cases import Case, make_case, reference
from tests.backend_cuda.families import FAMILIES
from tilefuse_cuda import compiler
from tilefuse_cuda.configs import GemmConfig
from tilefuse_cuda.problem import analyse
from tilefuse_cuda.provider import PROVIDER, CutlassGemmChoice

pytestmark = pytest.mark.gpu

ODD = (1, 17, 255, 1000)
KIND_STEPS = {
    "add_bias_n": (("add_bias_n", "n"),),
    "add_bias_m": (("add_bias_m", "m"),),
    "add_matrix": (("add_matrix", "mn"),),
    "mul_scalar": (("mul_scalar", -0.37),),
    "relu": (("relu",),),
    "gelu_erf": (("gelu_erf",),),
    "gelu_tanh": (("gelu_tanh",),),
    "silu": (("silu",),),
    "sigmoid": (("sigmoid",),),
    "tanh": (("tanh",),),
}
KIND_CONFIG = GemmConfig("cooperative", (128, 128, 64), (1, 1))


def _resized(family: str, odd: int) -> Case:
    """The family's request (same kernel) with its free dimension set to ``odd``.

    TMA fixes the contiguous extents to multiples of 8; the "free" dimension is
    one no operand of the family has contiguous.
    """
    kwargs = dict(FAMILY_KWARGS[family])
    kwargs[kwargs.pop("free")] = odd
    return make_case(**kwargs)


FAMILY_KWARGS = {
    "coop_mm_bias_gelu_residual": dict(
        op="mm", m=256, n=136, k=264, free="m",
        steps=(("add_bias_n", "n"), ("gelu_erf",), ("add_matrix", "mn")),
    ),
    "ping_bmm_colmajor_bias_m_silu_f32": dict(
        op="bmm", m=72, n=128, k=136, batch=3, dtype="float16", a_col=True, b_col=True,
        d_col=True, out_dtype="float32", free="n",
        steps=(("add_bias_m", "m"), ("silu",), ("mul_scalar", 0.5)),
    ),
    "coop_addmm_unaries_cluster2": dict(
        op="addmm", m=256, n=200, k=64, free="m",
        steps=(("gelu_tanh",), ("sigmoid",), ("tanh",), ("relu",)),
    ),
    "ping_mm_plain_cluster2": dict(op="mm", m=128, n=1000, k=520, a_col=True, free="k"),
}  # fmt: skip


def _choice(case: Case, config: GemmConfig) -> CutlassGemmChoice:
    problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
    return CutlassGemmChoice(problem, config, dims)


def _kind_case(kind: str, m: int) -> Case:
    return make_case("mm", m, 264, 1000, steps=KIND_STEPS[kind])


@pytest.fixture(scope="module", autouse=True)
def _compile_everything():
    """Build every kernel these tests need at once, in parallel nvcc processes."""
    choices = [_choice(_resized(f, 17), FAMILIES[f][0]) for f in FAMILIES]
    choices += [_choice(_kind_case(k, 17), KIND_CONFIG) for k in KIND_STEPS]
    choices += _provider_first_choice(_PROVIDER_CASE)
    choices.append(_choice(_bias_relu(*ONE_BUILD_SHAPES[0]), KIND_CONFIG))
    compiler.compile_many([(c.name, c.source()) for c in choices])


# One kernel class at three shapes: M=1, N off the 128 tile, K off the 64 tile.
ONE_BUILD_SHAPES = ((1, 136, 200), (300, 264, 72), (1000, 1032, 520))


def _bias_relu(m: int, n: int, k: int) -> Case:
    return make_case("mm", m, n, k, steps=(("add_bias_n", "n"), ("relu",)))


_PROVIDER_CASE = make_case("mm", 255, 4096, 1024, steps=(("add_bias_n", "n"), ("silu",)))


def _provider_first_choice(case: Case) -> list[CutlassGemmChoice]:
    return list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue, limit=1))


def _check(case: Case, choice: CutlassGemmChoice, seed: int = 0) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    specs = list(case.inputs) + list(case.epilogue.operands)
    tensors = [s.random(gen) for s in specs]
    out = case.layout.empty()
    choice.run(*tensors, out=out)
    torch.cuda.synchronize()
    expected = reference(case, tensors)
    k = case.inputs[-1].shape[-2]
    tol = 2e-2 if case.layout.dtype != "float32" else 2e-3
    torch.testing.assert_close(
        out.float(), expected.float(), rtol=tol, atol=tol * math.sqrt(k), msg=case.label
    )


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_eager(family, odd):
    case = _resized(family, odd)
    config = FAMILIES[family][0]
    choice = _choice(case, config)
    _check(case, choice)


@pytest.mark.parametrize("m", ODD)
@pytest.mark.parametrize("kind", sorted(KIND_STEPS))
def test_each_epilogue_kind_matches_eager(kind, m):
    case = _kind_case(kind, m)
    _check(case, _choice(case, KIND_CONFIG))


def test_provider_first_choice_runs_and_odd_alignment_is_refused():
    case = _PROVIDER_CASE
    assert PROVIDER.supports("mm", "cuda")
    choices = _provider_first_choice(case)
    assert len(choices) == 1
    choices[0].compile()
    _check(case, choices[0])
    bad = make_case("mm", 64, 64, 17)
    assert list(PROVIDER.choices(bad.op, bad.specs, bad.layout, bad.epilogue)) == []


def test_misaligned_pointer_is_a_failed_choice():
    import torch

    from tilefuse.errors import ChoiceFailed

    case = _kind_case("relu", 17)
    choice = _choice(case, KIND_CONFIG)
    a_spec, b_spec = case.inputs
    a = torch.randn(a_spec.shape[0] * a_spec.shape[1] + 1, device="cuda").bfloat16()
    a = a[1:].view(a_spec.shape)  # 2 bytes past a 16-byte boundary
    b = b_spec.random()
    out = case.layout.empty()
    with pytest.raises(ChoiceFailed, match="16-byte"):
        choice.run(a, b, out=out)


def test_kernels_do_not_depend_on_leading_dimension_padding():
    """A row-major A with a padded leading dimension (a slice) uses the same kernel."""
    import torch

    case = _kind_case("gelu_erf", 255)
    choice = _choice(case, KIND_CONFIG)
    big = torch.randn(255, 1000 + 8, device="cuda").bfloat16()
    a = big[:, :1000]
    b = case.inputs[1].random()
    out = case.layout.empty()
    choice.run(a, b, out=out)
    torch.testing.assert_close(
        out.float(), reference(case, [a, b]).float(), rtol=2e-2, atol=2e-2 * math.sqrt(1000)
    )


def test_one_build_serves_every_shape():
    """Three shapes of one class run the same loaded ``.so``; none builds anything."""
    import tilefuse

    before = tilefuse.stats()["artifacts_built"]
    cases = [_bias_relu(*shape) for shape in ONE_BUILD_SHAPES]
    choices = [_choice(case, KIND_CONFIG) for case in cases]
    assert len({c.compile() for c in choices}) == 1
    for seed, (case, choice) in enumerate(zip(cases, choices)):
        _check(case, choice, seed)
    assert choices[0]._lib is choices[1]._lib is choices[2]._lib
    assert tilefuse.stats()["artifacts_built"] == before
