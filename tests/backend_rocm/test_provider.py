"""The ``rocm`` choice provider and backend descriptor: discovery, refusals, picklable
choices, availability messages (no toolkit or device needed)."""

from __future__ import annotations

import pickle
from importlib.metadata import entry_points

import pytest

from tests.backend_rocm.cases import spec
from tilefuse import plugin
from tilefuse_rocm import descriptor, toolchain
from tilefuse_rocm.provider import PROVIDER, RocmGemmChoice

NO_EPILOGUE = plugin.Epilogue()


def _mm(dtype="bfloat16", epilogue=NO_EPILOGUE):
    """An mm request as a provider receives it: the op's inputs, then the operands."""
    inputs = (spec((64, 32), dtype), spec((32, 48), dtype), *epilogue.operands)
    return "mm", inputs, spec((64, 48), dtype), epilogue


def test_entry_points_are_registered():
    for group, obj in (
        (plugin.CHOICES_GROUP, PROVIDER),
        (plugin.BACKENDS_GROUP, descriptor.BACKEND),
    ):
        (ep,) = [e for e in entry_points(group=group) if e.name == "rocm"]
        assert ep.load() is obj
    assert isinstance(PROVIDER, plugin.ChoiceProvider)
    assert isinstance(descriptor.BACKEND, plugin.DeviceBackend)


def test_supports_is_false_without_rocm_and_never_raises():
    import torch

    if getattr(torch.version, "hip", None) is None:
        assert not PROVIDER.supports("mm", "cuda:0")
    assert not PROVIDER.supports("conv", "cuda:0")
    assert not PROVIDER.supports("mm", "cpu")
    assert not PROVIDER.supports(None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arch", "mfma"), [("gfx942", True), ("gfx90a:xnack-", True), ("gfx1100", False)]
)
def test_choices_follow_the_arch(monkeypatch, arch, mfma):
    monkeypatch.setenv(toolchain.ARCH_ENV, arch)
    choices = list(PROVIDER.choices(*_mm()))
    names = [c.name for c in choices]
    assert len(names) == len(set(names)) >= 4
    assert any("mfma" in n for n in names) == mfma
    for choice in choices:
        assert isinstance(choice, plugin.Choice)
        clone = pickle.loads(pickle.dumps(choice))
        assert clone.name == choice.name and clone.source() == choice.source()
        assert choice.arch == arch


def test_mixed_dtypes_get_no_mfma(monkeypatch):
    monkeypatch.setenv(toolchain.ARCH_ENV, "gfx942")
    inputs = (spec((8, 4), "bfloat16"), spec((4, 8), "float16"))
    choices = list(PROVIDER.choices("mm", inputs, spec((8, 8), "float32"), plugin.Epilogue()))
    assert choices and not any(c.config.mfma for c in choices)


def test_transposed_inputs_select_the_column_major_template():
    a = plugin.TensorSpec((64, 32), (1, 64), "float16", "cuda:0")
    b = plugin.TensorSpec((32, 48), (1, 32), "float16", "cuda:0")
    (choice, *_) = PROVIDER.choices("mm", (a, b), spec((64, 48), "float16"), plugin.Epilogue())
    assert (choice.problem.a_layout, choice.problem.b_layout) == ("col", "col")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("conv", (spec((2, 2)), spec((2, 2))), spec((2, 2)), plugin.Epilogue()), "not one of"),
        (_mm("int32"), "dtype int32"),
        (_mm(epilogue=plugin.Epilogue(steps=(plugin.EpilogueStep("softplus"),))), "softplus"),
        (
            _mm(
                epilogue=plugin.Epilogue(
                    steps=(plugin.EpilogueStep("add_matrix", 0),), operands=(spec((3, 48)),)
                )
            ),
            "does not broadcast",
        ),
        (_mm(epilogue=plugin.Epilogue(out_dtype="float32")), "epilogue stores float32"),
    ],
)
def test_unservable_problems_yield_nothing_with_a_reason(args, why):
    assert list(PROVIDER.choices(*args)) == []
    verdict = PROVIDER.accepts(*args)
    assert not verdict and why in verdict.reason


@pytest.mark.parametrize("op", ["mm", "addmm"])
def test_epilogue_operands_are_accepted(op):
    """Epilogue operands follow the op's inputs; they were once miscounted (the inputs
    were compared with the op's own count), so every epilogue with a tensor was refused."""
    bias_n = spec((48,), "bfloat16")
    matrix = spec((64, 48), "float32")
    epilogue = plugin.Epilogue(
        (plugin.EpilogueStep("add_bias_n", 0), plugin.EpilogueStep("add_matrix", 1)),
        (bias_n, matrix),
    )
    name, inputs, layout, _ = _mm(epilogue=epilogue)
    if op == "addmm":
        inputs = (spec((48,), "bfloat16"), *inputs)
    verdict = PROVIDER.accepts(op, inputs, layout, epilogue)
    assert verdict, verdict.reason
    (choice, *_) = PROVIDER.choices(op, inputs, layout, epilogue)
    assert choice.problem.epilogue == epilogue
    assert choice.problem.bias_dtype == ("bfloat16" if op == "addmm" else None)
    assert "epilogue step 1: add_matrix" in choice.source()
    short = PROVIDER.accepts(op, inputs[:-1], layout, epilogue)
    assert not short and "plus 2 epilogue operands" in short.reason


def test_version_tracks_the_template():
    assert PROVIDER.version.startswith("0.1.0+") and len(PROVIDER.version) == len("0.1.0+") + 8


def test_availability_names_everything_missing(monkeypatch):
    monkeypatch.setattr(toolchain, "find_hipcc", lambda: None)
    av = descriptor.BACKEND.availability()
    assert not av.ok and "hipcc not found" in av.reason
    import torch

    if getattr(torch.version, "hip", None) is None:
        assert "torch is not a ROCm build" in av.reason and "no ROCm device" in av.reason


def test_choice_repr_and_scheduling_refusals():
    (choice, *_) = PROVIDER.choices(*_mm())
    assert isinstance(choice, RocmGemmChoice) and "rocm_" in repr(choice)
    factory = descriptor.BACKEND.load()
    sched = factory(plugin.CompileContext(device="cuda:0", policy=None))
    assert isinstance(sched, plugin.KernelScheduling)
    verdict = sched.can_fuse_vertical(None, None)
    assert not verdict and "GEMM templates only" in verdict.reason
