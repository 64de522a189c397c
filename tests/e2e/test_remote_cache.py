"""The remote cache end to end: a second process with an empty local cache but a warm
remote one builds no kernel and benchmarks nothing; a server that is down never fails a
compile. Runs against a real ``redis-server`` (skipped with the reason where it is absent)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tilefuse
from tests.compile_check import check
from tests.redis_server import free_port, running_redis, skip_reason
from tilefuse import remote_cache

PROGRAM = Path(__file__).with_name("remote_cache_program.py")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    remote_cache.reset()
    yield
    remote_cache.reset()


def _run_program(tmp_path: Path, cache: str, url: str) -> dict:
    """Run the program in a fresh interpreter with its own local cache ``cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEFUSE_")}
    env.update(
        TILEFUSE_CACHE_DIR=str(tmp_path / cache),
        TILEFUSE_REMOTE_CACHE=url,
        TILEFUSE_STRICT="1",
        TRITON_INTERPRET="1",
    )
    done = subprocess.run([sys.executable, str(PROGRAM)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, f"the program failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_with_a_warm_remote_cache_builds_and_benchmarks_nothing(tmp_path):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if importlib.util.find_spec("tilefuse_acme") is None:
        pytest.skip("install examples/third_party_backend (nox -s tests does)")
    from tilefuse_acme.descriptor import BACKEND as ACME

    if not ACME.availability().ok:
        pytest.skip(ACME.availability().reason)
    with running_redis(tmp_path / "redis") as url:
        first = _run_program(tmp_path, "cache-a", url)["stats"]
        second = _run_program(tmp_path, "cache-b", url)["stats"]
    for stats in (first, second):
        assert (stats["graphs_compiled"], stats["graphs_fallen_back"]) == (2, 0), stats
        assert stats["remote_errors"] == stats["remote_rejected"] == 0, stats
    assert first["artifacts_built"] >= 1 and first["autotune_benchmarks"] == 1, first
    assert first["remote_stores"] >= 2, first  # the shared object and the winner
    assert second["kernels_compiled"] == first["kernels_compiled"], (first, second)
    assert second["artifacts_built"] == 0, second
    assert second["autotune_benchmarks"] == 0, second
    assert second["remote_hits"] >= 2, second


def test_a_server_that_is_down_never_fails_a_compile(monkeypatch, caplog):
    monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", f"redis://127.0.0.1:{free_port()}/0")
    x = torch.randn(7)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        check(lambda x: torch.sigmoid(x) * 3.0 - 1.0, x)
        check(lambda x: torch.tanh(x) + 0.5, x)
    warnings = [r for r in caplog.records if "TILEFUSE_REMOTE_CACHE" in r.message]
    assert len(warnings) == 1, [w.message for w in warnings]
    stats = tilefuse.stats()
    assert stats["remote_hits"] == 0 and not remote_cache.enabled()
