"""Fixtures for the autotune tests: an isolated cache and short limits."""

from __future__ import annotations

import pytest

from tilefuse_autotune import Autotuner, BenchConfig, TimingConfig, WinnersCache

# Small limits keep the suite fast: the hanging fake costs HANG_TIMEOUT_S.
HANG_TIMEOUT_S = 3.0
FAST_LIMITS = BenchConfig(timing=TimingConfig(cpu_warmup=1, cpu_reps=3), timeout_s=HANG_TIMEOUT_S)


@pytest.fixture
def cache(tmp_path) -> WinnersCache:
    return WinnersCache(tmp_path / "autotune")


@pytest.fixture
def tuner(cache) -> Autotuner:
    return Autotuner(cache=cache, bench_config=FAST_LIMITS, per_provider=2)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache-root"))
    monkeypatch.delenv("TILEFUSE_AUTOTUNE", raising=False)
