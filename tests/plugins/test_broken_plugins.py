"""A broken plugin never breaks another: graphs still compile with the next backend.

Each test installs a throwaway distribution next to the real ones, whose backend
claims the device with a higher priority than Triton and then misbehaves.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

import tilefuse
from tests.compile_check import assert_same
from tests.core.fake_dists import make_dist, source_for
from tilefuse import cli, plugin
from tilefuse.discovery import _installed_entry_points, reset_registry

pytest.importorskip("tilefuse_triton", reason="needs the Triton backend")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

GREEDY = """
from tilefuse import plugin

class Backend:
    info = plugin.BackendInfo(
        name="greedy", api_version=plugin.API_VERSION, device_types=({device!r},),
        capabilities=frozenset({{"pointwise", "reduction", "template:gemm"}}), priority=1000,
    )
    def availability(self):
        {availability}
    def load(self):
        {load}

BACKEND = Backend()
"""


@pytest.fixture
def greedy(tmp_path, monkeypatch):
    """Install backend ``greedy`` with the given method bodies; returns the installer."""
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(availability="return plugin.Availability.available()", load="return 42"):
        sys.modules.pop("acme_greedy", None)
        source = GREEDY.format(device=DEVICE, availability=availability, load=load)
        entry_points = {plugin.BACKENDS_GROUP: {"greedy": "acme_greedy:BACKEND"}}
        make_dist(tmp_path, "acme-greedy", entry_points, {"acme_greedy": source})
        fake = source_for(tmp_path)
        return reset_registry(lambda group: [*_installed_entry_points(group), *fake(group)])

    yield install
    reset_registry()
    sys.modules.pop("acme_greedy", None)


def _compiles(fn, *inputs):
    torch._dynamo.reset()
    tilefuse.reset()
    assert_same(torch.compile(fn, backend="tilefuse")(*inputs), fn(*inputs))
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0, stats


@pytest.mark.parametrize(
    "load, says",
    [
        ("raise RuntimeError('libgreedy.so missing')", "load() raised RuntimeError"),
        ("return 42", "load() returned 42, which is not callable"),
    ],
)
def test_backend_whose_load_fails_hands_its_nodes_to_the_next(greedy, caplog, load, says):
    greedy(load=load)
    x = torch.randn(5, 7, device=DEVICE)
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        _compiles(lambda t: (t * 2).sum(-1) + 1, x)
    assert "refusing backend 'greedy' from acme-greedy 1.0" in caplog.text and says in caplog.text
    assert "broken: " + says in cli.format_plugin_table()


def test_backend_with_a_malformed_availability_is_passed_over(greedy, caplog):
    greedy(availability="return 'sure'")
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        _compiles(lambda t: t.exp() - 1, torch.randn(9, device=DEVICE))
    assert "availability() returned 'sure', not a tilefuse.plugin.Availability" in caplog.text


def test_requested_broken_backend_is_an_error_naming_it(greedy, monkeypatch):
    greedy(load="raise RuntimeError('libgreedy.so missing')")
    monkeypatch.setenv("TILEFUSE_BACKENDS", "greedy,triton")
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(lambda t: t + 1, backend="tilefuse")(torch.randn(3, device=DEVICE))
    text = str(info.value)
    assert "backend 'greedy' from acme-greedy 1.0 failed to load" in text
    assert "Installed backends:" in text and "triton" in text
    assert "pip uninstall acme-greedy" in text
