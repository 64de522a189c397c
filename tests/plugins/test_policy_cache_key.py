"""The active scheduling policy's ``uuid()`` enters the kernel-cache key: a kernel compiled
under another policy is another cache entry, even when its source is the same."""

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


def test_compile_context_salt_is_the_policy_uuid():
    def salt(policy):
        return plugin.CompileContext(device="cpu", policy=policy).cache_salt()

    assert salt(None) == ""
    assert salt(_policy("v1")) != salt(_policy("v2"))
    assert "v1" in salt(_policy("v1"))


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
