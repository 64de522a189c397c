"""The active scheduling policy's ``uuid()`` and the plugins' versions enter the kernel-cache
key: a kernel compiled under another policy, or by another version of a plugin, is another
cache entry, even when its source is the same."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.compile_check import compiled_reports
from tilefuse import plugin
from tilefuse.codegen import kernel_cache
from tilefuse.discovery import reset_registry

SOURCE = "def f():\n    return 1\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_salt_enters_the_key_and_the_entry_still_verifies():
    plain = kernel_cache.store_source("test", SOURCE)
    a = kernel_cache.store_source("test", SOURCE, "policy=a")
    b = kernel_cache.store_source("test", SOURCE, "policy=b")
    assert len({plain, a, b}) == 3
    assert kernel_cache.store_source("test", SOURCE, "policy=a") == a
    assert kernel_cache.load_module(a, "salted_a").f() == 1


def _policy(uuid):
    return SimpleNamespace(uuid=lambda: uuid)


def test_compile_context_salt_holds_the_policy_uuid_and_the_plugin_versions():
    def salt(policy, versions=("tilefuse-core 1.0", "acme 1.0")):
        context = plugin.CompileContext(device="cpu", policy=policy, plugin_versions=versions)
        return context.cache_salt()

    assert salt(_policy("v1")) != salt(_policy("v2"))
    assert "v1" in salt(_policy("v1"))
    assert salt(None) != salt(None, ("tilefuse-core 1.0", "acme 1.1"))
    assert "acme 1.1" in salt(None, ("tilefuse-core 1.0", "acme 1.1"))


def test_core_passes_the_backend_distribution_and_version():
    pytest.importorskip("tilefuse_triton", reason="the Triton backend is not installed")
    from tilefuse.backend_selection import owner, plugin_versions

    backend = owner("cpu", plugin.CAP_POINTWISE)
    versions = plugin_versions(backend, _policy_with_dist())
    assert versions[0].startswith("tilefuse-core ")
    assert versions[1].startswith("tilefuse-backend-triton ")
    assert versions[2] == "acme-policy 2.0"


def _policy_with_dist():
    return SimpleNamespace(uuid=lambda: "u", name="acme", dist="acme-policy 2.0")


def _triton_entries(root):
    return {p.name for p in (root / "triton").rglob("*.py")}


def test_changing_the_policy_changes_the_kernel_cache_key(private_cache, monkeypatch):
    pytest.importorskip("tilefuse_toy.policy", reason="the toy policy plugin is not installed")
    pytest.importorskip("tilefuse_triton", reason="the Triton backend is not installed")
    x = torch.randn(37)

    def fn(x):
        return torch.sin(x) * 2 + 1

    monkeypatch.delenv("TILEFUSE_POLICY", raising=False)
    reset_registry()
    _, plain = compiled_reports(fn, x)
    before = _triton_entries(private_cache)
    monkeypatch.setenv("TILEFUSE_POLICY", "toy-policy")  # its tiling() keeps the heuristic
    reset_registry()
    try:
        _, toy = compiled_reports(fn, x)
    finally:
        reset_registry()
    added = _triton_entries(private_cache) - before
    assert [k.source for k in plain[0].kernels] == [k.source for k in toy[0].kernels]
    assert len(added) == len(toy[0].kernels) == 1
