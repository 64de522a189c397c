"""The provider's contract on a machine without an sm_90 GPU."""

from __future__ import annotations

import logging

from tests.backend_cuda.cases import make_case
from tilefuse import plugin
from tilefuse_cuda.configs import heuristic
from tilefuse_cuda.descriptor import BACKEND
from tilefuse_cuda.provider import PROVIDER


def test_provider_is_a_choice_provider():
    assert isinstance(PROVIDER, plugin.ChoiceProvider)
    assert PROVIDER.name == "cuda" and PROVIDER.api_version == plugin.API_VERSION
    assert PROVIDER.supports("conv", "cuda") is False
    assert PROVIDER.supports("mm", "cpu") is False


def test_choices_first_is_heuristic_and_limited(monkeypatch):
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "default")
    case = make_case("mm", 1000, 4096, 1024, steps=(("add_bias_n", "n"), ("relu",)))
    choices = list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))
    assert 1 <= len(choices) <= 4
    assert choices[0].config == heuristic(choices[0].dims)
    assert len({c.name for c in choices}) == len(choices)
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "max")
    monkeypatch.setenv("TILEFUSE_CUDA_MAX_CANDIDATES", "9")
    assert len(list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))) > 4


def test_unservable_shape_yields_nothing_and_logs_why(caplog):
    case = make_case("mm", 17, 17, 17)
    with caplog.at_level(logging.INFO, logger="tilefuse_cuda.provider"):
        assert list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue)) == []
    assert "multiples of 8" in caplog.text


def test_availability_names_all_three_parts():
    avail = BACKEND.availability()
    assert "nvcc" in avail.reason and "cutlass" in avail.reason
    assert isinstance(avail, plugin.Availability)
