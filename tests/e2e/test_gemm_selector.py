"""Core reaches the autotuner only through the ``tilefuse.autotune.selector`` entry point:
with none installed a GEMM runs as an eager extern call; an installed one picks its kernel."""

from __future__ import annotations

import sys

import pytest
import torch

import tilefuse
from tests.compile_check import check, kernel_count
from tests.core.fake_dists import make_dist, source_for
from tilefuse import backend_selection, discovery, plugin
from tilefuse.errors import PluginConflictError

FAKE_SELECTOR = """
from tilefuse import plugin

CALLS = []
ASKED = []
WARMED = []
REFUSE = {refuse!r}

class Picked:
    def __init__(self, op, epilogue):
        self.choice = plugin.ExternChoice(op, epilogue)
        self.label = "fake/" + self.choice.name
        self.summary = "fake pick"

class Selector:
    name = "{name}"
    api_version = plugin.API_VERSION
    def accepts(self, op, inputs, layout, epilogue):
        ASKED.append((op, [s.kind for s in epilogue.steps]))
        kinds = {{s.kind for s in epilogue.steps}}
        return plugin.Verdict.no("fake: no " + REFUSE) if REFUSE in kinds else plugin.Verdict.yes()
    def select(self, op, inputs, layout, epilogue):
        CALLS.append((op, [s.kind for s in epilogue.steps]))
        return Picked(op, epilogue)
    def warm_up(self, device_type):
        WARMED.append(device_type)

SELECTOR = Selector()
"""


@pytest.fixture
def selectors(tmp_path, monkeypatch):
    """Replace the installed selectors with throwaway ones under ``tmp_path``; ``add``
    installs one. Every other plugin group reads the real installation."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    fake = source_for(tmp_path)
    installed = discovery._installed_entry_points

    def source(group):
        return fake(group) if group == plugin.SELECTORS_GROUP else installed(group)

    def add(name, module_source):
        module = f"acme_selector_{name}"
        eps = {plugin.SELECTORS_GROUP: {name: f"{module}:SELECTOR"}}
        make_dist(tmp_path, f"acme-selector-{name}", eps, {module: module_source})
        return discovery.reset_registry(source)

    discovery.reset_registry(source)
    yield add
    discovery.reset_registry()
    for name in [m for m in sys.modules if m.startswith("acme_selector_")]:
        del sys.modules[name]


def _template_kernels(reports):
    return [k for r in reports for k in r.kernels if k.kind.startswith("template:")]


def test_without_a_selector_the_gemm_is_an_eager_extern(selectors):
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    reports = check(lambda a, b: torch.relu(a @ b), a, b)
    assert _template_kernels(reports) == []
    assert "no autotune selector is installed" in reports[0].externs["mm"]
    assert kernel_count(reports) == 1  # relu alone: nothing is fused into an eager call
    assert tilefuse.stats()["templates"] == 0 and tilefuse.stats()["externs"] >= 1


def test_an_installed_selector_picks_the_kernel_with_the_epilogue_fused(selectors):
    selectors("fake", FAKE_SELECTOR.format(name="fake", refuse=None))
    a, b = torch.randn(2, 5, 7), torch.randn(2, 7, 3)
    reports = check(lambda a, b: torch.relu(torch.bmm(a, b)), a, b)
    module = sys.modules["acme_selector_fake"]
    assert module.ASKED == [("bmm", ["relu"])]  # the epilogue question, asked once
    assert module.CALLS == [("bmm", ["relu"])]
    [kernel] = _template_kernels(reports)
    assert kernel.backend == "fake/torch.bmm" and len(kernel.nodes) == 2
    assert "bmm" not in reports[0].externs


def test_an_epilogue_the_selector_refuses_runs_as_its_own_kernel_with_the_reason(selectors):
    selectors("fake", FAKE_SELECTOR.format(name="fake", refuse="tanh"))
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    reports = check(lambda a, b: torch.tanh(a @ b), a, b)
    module = sys.modules["acme_selector_fake"]
    assert module.ASKED == [("mm", ["tanh"])]
    assert module.CALLS == [("mm", [])]  # the GEMM alone
    [kernel] = _template_kernels(reports)
    assert len(kernel.nodes) == 1 and kernel_count(reports) == 2
    assert any("no template provider accepts it: fake: no tanh" in r for r in reports[0].refusals)


@pytest.mark.parametrize("mode", ["default", "off"])
def test_the_selector_warms_up_once_per_device_type_unless_autotuning_is_off(
    selectors, monkeypatch, mode
):
    from tilefuse import dynamo_backend

    monkeypatch.setattr(dynamo_backend, "_warmed_device_types", set())
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", mode)
    selectors("fake", FAKE_SELECTOR.format(name="fake", refuse=None))
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    check(lambda a, b: torch.relu(a @ b), a, b)
    check(lambda a, b: torch.tanh(a @ b) + 1, a, b)
    warmed = sys.modules["acme_selector_fake"].WARMED
    assert warmed == ([] if mode == "off" else ["cpu"])


def test_a_broken_selector_is_skipped_and_the_gemm_runs_eagerly(selectors, caplog):
    selectors("broken", "raise ImportError('no toolkit here')\n")
    a, b = torch.randn(4, 6), torch.randn(6, 2)
    reports = check(lambda a, b: a @ b, a, b)
    assert "no autotune selector is installed" in reports[0].externs["mm"]
    assert "acme-selector-broken" in caplog.text


def test_two_selectors_are_a_conflict_not_a_silent_pick(selectors):
    selectors("one", FAKE_SELECTOR.format(name="one", refuse=None))
    reg = selectors("two", FAKE_SELECTOR.format(name="two", refuse=None))
    with pytest.raises(PluginConflictError, match="several autotune selectors.*one.*two"):
        backend_selection.template_selector(reg)


def test_the_autotuner_declares_its_selector():
    pytest.importorskip("tilefuse_autotune")
    found = discovery.reset_registry().usable(plugin.SELECTORS_GROUP)
    assert [type(s).__name__ for s in found] == ["AutotuneSelector"]
    assert isinstance(found[0], plugin.TemplateSelector)


RAISING_SELECTOR = """
from tilefuse import plugin

class Selector:
    name = "raising"
    api_version = plugin.API_VERSION
    def accepts(self, op, inputs, layout, epilogue):
        raise RuntimeError("no idea")
    def select(self, op, inputs, layout, epilogue):
        raise AssertionError("not reached")

SELECTOR = Selector()
"""


def test_a_selector_whose_accepts_raises_refuses_or_fails_strict(selectors, monkeypatch):
    from tilefuse.codegen.templates import accepts_epilogue
    from tilefuse.errors import PluginError

    selectors("raising", RAISING_SELECTOR)
    spec = plugin.TensorSpec((4, 4), (4, 1), "float32", "cpu")
    request = ("mm", (spec, spec), spec, plugin.Epilogue((plugin.EpilogueStep("relu"),)))
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)
    verdict = accepts_epilogue(*request)
    assert not verdict.ok and "'raising': accepts raised RuntimeError: no idea" in verdict.reason
    monkeypatch.setattr("tilefuse.config.strict", lambda: True)
    with pytest.raises(PluginError, match="fix or uninstall"):
        accepts_epilogue(*request)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_vendor_first_winner_runs_the_graph_as_eager_does(monkeypatch, tmp_path, dtype):
    """Max mode measures the vendor product followed by one epilogue pass; when it wins,
    the compiled graph runs it (the benchmark is replaced so that it wins here)."""
    from tilefuse_autotune import benchmark
    from tilefuse_autotune.benchmark import BenchRun, Outcome

    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "max")
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    picked = []

    def vendor_first_wins(problem, labels, choices, config, progress, bench=None):
        times = [0.5 if getattr(c, "vendor_first", False) else 2.0 for c in choices]
        picked.extend(lb for lb, c in zip(labels, choices) if getattr(c, "vendor_first", 0))
        return BenchRun([Outcome(lb, time_ms=t) for lb, t in zip(labels, times)], 0.0)

    monkeypatch.setattr(benchmark, "run_benchmarks", vendor_first_wins)

    def fn(x, w, r):
        return torch.nn.functional.gelu(x @ w) * 0.5 + r

    x, w, r = (torch.randn(*s).to(dtype) for s in ((33, 20), (20, 17), (33, 17)))
    reports = check(fn, x, w, r, dtype=dtype)
    assert picked and all("vendor_then" in p for p in picked), picked
    gemm = [k for rep in reports for k in rep.kernels if "vendor_then" in str(k)]
    assert gemm, [str(k) for rep in reports for k in rep.kernels]
