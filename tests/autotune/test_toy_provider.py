"""A third-party provider registered by its entry point alone is discovered and competes."""

from __future__ import annotations

import sys

import pytest
import torch

from tilefuse import plugin
from tilefuse.discovery import reset_registry

pytest.importorskip("tilefuse_toy.choices", reason="install tests/plugins/toy (nox -s tests does)")

if sys.version_info >= (3, 12):
    from importlib.metadata import entry_points
else:
    from importlib_metadata import entry_points


@pytest.fixture
def only_toy_provider():
    """The installed entry points, narrowed to the toy provider (other providers may be slow)."""

    def source(group):
        return [ep for ep in entry_points(group=group) if ep.name == "toy-choices"]

    yield reset_registry(source)
    reset_registry()


def test_installed_provider_is_discovered():
    from tilefuse_autotune import candidates_for

    reset_registry()
    try:
        a = plugin.TensorSpec((4, 4), (4, 1), "float32", "cpu")
        found = candidates_for("mm", (a, a), a, plugin.Epilogue())
        assert "toy-choices/toy-matmul-mm" in [c.label for c in found]
        meta = plugin.TensorSpec((4, 4), (4, 1), "float32", "meta")
        assert "toy-choices" not in {
            c.provider for c in candidates_for("mm", (a, a), meta, plugin.Epilogue())
        }
    finally:
        reset_registry()


def test_toy_provider_competes_with_extern_on_addmm_with_epilogue(tuner, only_toy_provider):
    m, k, n = 24, 40, 16
    a = plugin.TensorSpec((m, k), (k, 1), "float32", "cpu")
    b = plugin.TensorSpec((k, n), (1, k), "float32", "cpu")  # transposed B
    bias = plugin.TensorSpec((n,), (1,), "float32", "cpu")
    out = plugin.TensorSpec((m, n), (n, 1), "float32", "cpu")
    epi = plugin.Epilogue(steps=(plugin.EpilogueStep("relu"),))
    sel = tuner.select("addmm", None, (bias, a, b), out, epi, mode="max")
    assert sel.source == "benchmark"
    assert set(sel.timings_ms) == {"extern/torch.addmm", "toy-choices/toy-matmul-addmm"}
    assert sel.failures == {}
    assert "tried 2, 0 failed" in sel.summary

    tb, ta, tbb = bias.random(), a.random(), b.random()
    result = out.empty()
    sel.choice.compile()
    sel.choice.run(tb, ta, tbb, out=result)
    torch.testing.assert_close(result, torch.relu(torch.addmm(tb, ta, tbb)))
