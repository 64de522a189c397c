"""``bench/remote_cache.py``: its verdict reads the three processes right, and a CPU
``--smoke`` run against a real ``redis-server`` writes a JSON whose warm-remote process
built and benchmarked nothing."""

from __future__ import annotations

import json

import pytest

from bench import remote_cache
from tests.redis_server import skip_reason


def _row(seconds, **stats):
    return {"compile_s": seconds, "stats": {name: stats.get(name, 0) for name in
                                            remote_cache.REPORTED}}  # fmt: skip


def test_the_verdict_names_what_the_warm_remote_process_built_and_the_ratio():
    good = {"warm_remote": _row(1.1), "warm_local": _row(1.0)}
    assert [line.split(": ")[-1] for line in remote_cache.verdict(good)] == ["met", "met"]
    bad = {"warm_remote": _row(1.5, triton_compiles=3), "warm_local": _row(1.0)}
    lines = remote_cache.verdict(bad)
    assert "MISSED ({'triton_compiles': 3})" in lines[0]
    assert "1.50x" in lines[1] and lines[1].endswith("MISSED")


def test_smoke_run_writes_the_json(tmp_path, capsys):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    assert remote_cache.main(["--smoke", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("remote-cache*.json")
    data = json.loads(path.read_text())
    assert set(data["rows"]) == {"cold", "warm_remote", "warm_local"}
    assert data["rows"]["cold"]["stats"]["remote_stores"] >= 1
    warm = data["rows"]["warm_remote"]["stats"]
    assert warm["graphs_compiled"] == 3 and warm["graphs_fallen_back"] == 0, warm
    assert warm["remote_hits"] >= 1 and warm["artifacts_built"] == 0, warm
    assert data["verdict"][0].endswith("met"), data["verdict"]
