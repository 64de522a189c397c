"""The autotune selector's ``accepts``: the one answer to "may this GEMM take this
epilogue?", made from its providers' ``accepts``."""

from __future__ import annotations

import pytest

from tests.autotune.fake_choices import FakeProvider, FastChoice, mm_problem
from tilefuse import config, plugin
from tilefuse_autotune.selection import accepts
from tilefuse_autotune.selector import SELECTOR

RELU = plugin.Epilogue((plugin.EpilogueStep("relu"),))


class Answering(FakeProvider):
    def __init__(self, name, answer):
        super().__init__(name, [])
        self.answer = answer
        self.asked = 0

    def accepts(self, op, inputs, layout, epilogue):
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_yes_when_one_provider_accepts_and_each_is_asked_at_most_once():
    inputs, layout = mm_problem(8, 8, 8)
    first = Answering("first", plugin.Verdict.no("first: too small"))
    second = Answering("second", plugin.Verdict.yes())
    third = Answering("third", plugin.Verdict.yes())
    assert accepts("mm", inputs, layout, RELU, [first, second, third]).ok
    assert (first.asked, second.asked, third.asked) == (1, 1, 0)


def test_no_names_every_providers_reason():
    inputs, layout = mm_problem(8, 8, 8)
    providers = [
        Answering("a", plugin.Verdict.no("no relu")),
        Answering("b", RuntimeError("boom")),
        Answering("c", "yes please"),
    ]
    verdict = accepts("mm", inputs, layout, RELU, providers)
    assert not verdict.ok
    assert "a: no relu" in verdict.reason
    assert "b: raised RuntimeError" in verdict.reason
    assert "c: answered str, not a Verdict" in verdict.reason


def test_providers_that_do_not_serve_the_op_are_not_asked():
    inputs, layout = mm_problem(8, 8, 8)
    mm_only = Answering("mm-only", plugin.Verdict.yes())
    verdict = accepts("bmm", inputs, layout, RELU, [mm_only])
    assert not verdict.ok and "no choice provider serves bmm" in verdict.reason
    assert mm_only.asked == 0


def test_fake_provider_accepts_only_with_choices():
    inputs, layout = mm_problem(8, 8, 8)
    assert accepts("mm", inputs, layout, RELU, [FakeProvider("f", [FastChoice()])]).ok
    assert not accepts("mm", inputs, layout, RELU, [FakeProvider("f", [])]).ok


@pytest.mark.skipif(not config.triton_interpreted(), reason="needs TRITON_INTERPRET=1 on CPU")
def test_the_installed_selector_and_the_triton_provider_answer():
    triton = pytest.importorskip("tilefuse_triton.gemm.provider").PROVIDER
    inputs, layout = mm_problem(16, 16, 16)
    assert SELECTOR.accepts("mm", inputs, layout, RELU).ok
    assert accepts("mm", inputs, layout, RELU, [triton]).ok
    softplus = plugin.Epilogue((plugin.EpilogueStep("softplus"),))
    verdict = accepts("mm", inputs, layout, softplus, [triton])
    assert not verdict.ok and verdict.reason.startswith("triton: ") and "softplus" in verdict.reason


def test_unmeasured_modes_on_cuda_leave_template_only_epilogues_unfused(monkeypatch):
    """On CUDA, a mode that never benchmarks fuses an epilogue only cuBLASLt computes
    (bias [+ relu]) or one with a measured winner cached: a template's unmeasured
    heuristic pick is the worse bet than the vendor GEMM and a separate kernel."""
    monkeypatch.setattr("tilefuse_autotune.keys.device_name", lambda device: "a GPU")
    inputs, layout = mm_problem(8, 8, 8, device="cuda:0")
    fused = Answering("fused", plugin.Verdict.yes())
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "default")
    verdict = accepts("mm", inputs, layout, RELU, [fused])
    assert not verdict.ok and "unmeasured" in verdict.reason
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "quick")
    assert accepts("mm", inputs, layout, RELU, [fused]).ok
    cpu_inputs, cpu_layout = mm_problem(8, 8, 8)
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "default")
    assert accepts("mm", cpu_inputs, cpu_layout, RELU, [fused]).ok
