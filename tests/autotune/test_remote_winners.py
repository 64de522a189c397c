"""Winners shared through the remote cache (``TILEFUSE_REMOTE_CACHE``, a real redis-server):
a winner measured by one process serves another without benchmarking; an entry whose key
fields do not hash to its digest is refused; check verdicts stay local."""

from __future__ import annotations

import json

import pytest

import tilefuse
from tests.autotune.conftest import FAST_LIMITS
from tests.autotune.fake_choices import FastChoice, mm_problem
from tests.redis_server import running_redis, skip_reason
from tilefuse import remote_cache
from tilefuse_autotune import Autotuner, Candidate, WinnersCache, benchmark
from tilefuse_autotune.benchmark import BenchRun, Outcome


@pytest.fixture
def redis_client(tmp_path, monkeypatch):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    import redis

    remote_cache.reset()
    with running_redis(tmp_path / "redis") as url:
        monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", url)
        client = redis.Redis.from_url(url)
        yield client
        client.close()
    remote_cache.reset()


@pytest.fixture
def bench_calls(monkeypatch):
    """Replaces benchmarking: the last candidate offered is the fastest."""
    calls: list[list[str]] = []

    def fake_run(problem, labels, choices, config, progress, bench=None):
        calls.append(list(labels))
        return BenchRun([Outcome(label, time_ms=100.0 - i) for i, label in enumerate(labels)], 0.0)

    monkeypatch.setattr(benchmark, "run_benchmarks", fake_run)
    return calls


def _offered():
    return [Candidate("alpha", "1.0", FastChoice(f"a{i}"), first_party=True) for i in range(3)]


def _tuner(tmp_path, name):
    return Autotuner(cache=WinnersCache(tmp_path / name), bench_config=FAST_LIMITS)


def test_a_winner_measured_elsewhere_serves_without_benchmarking(
    redis_client, bench_calls, tmp_path
):
    inputs, layout = mm_problem()
    tilefuse.reset()
    measured = _tuner(tmp_path, "a").select("mm", _offered(), inputs, layout, mode="max")
    assert measured.source == "benchmark" and measured.label == "alpha/a2"
    assert tilefuse.stats()["autotune_benchmarks"] == 1 and len(bench_calls) == 1

    tilefuse.reset()
    other = _tuner(tmp_path, "b")
    for mode in ("max", "default"):
        sel = other.select("mm", _offered(), inputs, layout, mode=mode)
        assert (sel.source, sel.label) == ("cache", "alpha/a2")
    assert len(bench_calls) == 1 and tilefuse.stats()["autotune_benchmarks"] == 0
    assert tilefuse.stats()["remote_hits"] == 1, "the first hit is kept in the local file"
    assert [e["choice"] for e in other.cache.entries().values()] == ["a2"]


def test_an_entry_whose_key_does_not_hash_to_its_digest_is_refused(
    redis_client, bench_calls, tmp_path
):
    inputs, layout = mm_problem()
    _tuner(tmp_path, "a").select("mm", _offered(), inputs, layout, mode="max")
    (key,) = redis_client.keys("tilefuse:v1:autotune:*")
    key = key.decode()
    payload = remote_cache.open_envelope(key, redis_client.get(key))
    entry = json.loads(payload)
    entry["choice"], entry["key"]["op"] = "a0", "bmm"  # a winner of another problem
    forged = json.dumps(entry).encode()
    redis_client.set(key, remote_cache.envelope(key, forged))

    tilefuse.reset()
    sel = _tuner(tmp_path, "b").select("mm", _offered(), inputs, layout, mode="default")
    assert sel.source == "heuristic" and sel.label != "alpha/a0"
    assert tilefuse.stats()["remote_rejected"] == 1


def test_check_verdicts_are_not_published(redis_client, tmp_path):
    from tilefuse_autotune.trust import CheckRecords

    records = CheckRecords(WinnersCache(tmp_path / "a"), {"op": "mm", "providers": []})
    candidate = Candidate("third", "1.0", FastChoice("t"))
    records.record(candidate, Outcome(candidate.label, time_ms=1.0))
    assert records.passed(candidate) is True
    assert redis_client.keys("tilefuse:*") == []
