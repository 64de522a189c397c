"""The toy third-party distribution, installed by the test session, registers via the API alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tilefuse import backend_selection, plugin
from tilefuse.cli import main as cli_main
from tilefuse.discovery import reset_registry

pytest.importorskip("tilefuse_toy", reason="install tests/plugins/toy (nox -s tests does)")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    monkeypatch.delenv("TILEFUSE_POLICY", raising=False)
    yield reset_registry()
    reset_registry()


def test_installed_toy_backend_is_discovered_and_owns_meta(fresh_registry):
    import tilefuse_toy.backend as toy

    loads_before = toy.ToyBackend.loads
    chosen = backend_selection.owner("meta", plugin.CAP_POINTWISE)
    assert chosen.info.name == "toy"
    assert toy.ToyBackend.loads == loads_before, "listing must not call load()"
    factory = backend_selection.load_backend(chosen)
    scheduling = factory(plugin.CompileContext(device="meta", policy=None))
    assert isinstance(scheduling, plugin.KernelScheduling)


def test_policy_is_active_only_when_requested(monkeypatch):
    assert backend_selection.active_policy() is None
    monkeypatch.setenv("TILEFUSE_POLICY", "toy-policy")
    policy = backend_selection.active_policy()
    assert policy.uuid() == "toy-policy-v1"
    candidates = [
        plugin.FusionCandidate("horizontal", None, None, 10),
        plugin.FusionCandidate("vertical", None, None, 5),
    ]
    assert [c.kind for c in policy.rank_fusions(candidates)] == ["vertical"]


def test_backends_command_lists_plugins_and_availability(capsys):
    assert cli_main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "Device backends (tilefuse.backends):" in out
    assert "toy" in out and "tilefuse-toy-plugins 0.1.0" in out
    assert "available (always (test plugin))" in out
    assert "test-only backend" in out  # BackendInfo.description
    assert "toy-policy" in out and "uuid=toy-policy-v1" in out


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "tilefuse", "backends"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Scheduling policies (tilefuse.scheduling):" in done.stdout


def test_torch_compile_finds_tilefuse_by_entry_point():
    import torch._dynamo

    assert "tilefuse" in torch._dynamo.list_backends(exclude_tags=())
