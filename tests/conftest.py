"""Shared pytest setup: markers, and skipping GPU tests with a reason where no GPU is."""

from __future__ import annotations

import os

import pytest


def _cuda_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# Without a GPU, Triton kernels run through its interpreter on CPU tensors (the CI gate).
# Set before any test imports triton: the backend reads it at import time.
if not _cuda_present():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # The default (auto) builds each CUDA graph's C++ wrapper in the background: across the
    # GPU suite's hundreds of graphs, compilers would outlive the tests that started them.
    # The tests of the C++ wrapper, auto included, set it themselves.
    os.environ.setdefault("TILEFUSE_CPP_WRAPPER", "0")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (run with -m gpu on the GPU machine)")


# Test folders whose CPU tests compile CPU tensors, which only the Triton interpreter serves.
INTERPRETER_DIRS = ("e2e", "backend_triton", "opinfo")


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        if os.environ.get("TRITON_INTERPRET") == "1":
            return
        skip = pytest.mark.skip(
            reason="a CPU-tensor test: on a GPU machine Triton compiles for the GPU, so only "
            "its interpreter serves CPU tensors; run these with TRITON_INTERPRET=1"
        )
        for item in items:
            folder = item.path.parent.name
            if "gpu" not in item.keywords and folder in INTERPRETER_DIRS:
                item.add_marker(skip)
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with -m gpu on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fresh_compile_state(monkeypatch, tmp_path):
    """A private tilefuse cache and no compiled state (Dynamo's or tilefuse's) before and
    after the test: use it as ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    import tilefuse

    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    torch._dynamo.reset()
    tilefuse.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def redis_url(tmp_path, monkeypatch):
    """A throwaway ``redis-server`` (``tests/redis_server.py``) set as
    ``TILEFUSE_REMOTE_CACHE``; skipped, with the reason, where one cannot run."""
    from tests.redis_server import running_redis, skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path / "redis") as url:
        monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", url)
        yield url


@pytest.fixture
def server(redis_url):
    """A plain client of the ``redis_url`` server, to inspect and damage what tilefuse
    stored."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
