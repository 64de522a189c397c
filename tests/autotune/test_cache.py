"""The winners cache: round trip, corruption, concurrent writers, unusable directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tilefuse.errors import CacheError
from tilefuse_autotune import WinnersCache
from tilefuse_autotune.cache import key_digest

ENTRY = {"provider": "p", "choice": "c", "mode": "max", "time_ms": 1.5}


def test_round_trip_and_default_location(cache, tmp_path):
    assert cache.get("k") is None
    cache.put("k", ENTRY)
    assert cache.get("k") == ENTRY
    assert json.loads(cache.path.read_text())["entries"]["k"] == ENTRY
    assert WinnersCache().path == tmp_path / "cache-root" / "autotune" / "winners.json"


def test_digest_is_stable_and_order_free():
    assert key_digest({"a": 1, "b": [2]}) == key_digest({"b": [2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"format": 99}', ""])
def test_corrupt_file_is_ignored_and_rewritten(cache, garbage, caplog):
    cache.directory.mkdir(parents=True)
    cache.path.write_text(garbage)
    assert cache.get("k") is None
    cache.put("k", ENTRY)
    data = json.loads(cache.path.read_text())
    assert data["entries"] == {"k": ENTRY}


def test_corrupt_entry_is_ignored_and_dropped_on_write(cache):
    cache.directory.mkdir(parents=True)
    bad = {"format": 1, "entries": {"bad": {"provider": 3}, "good": ENTRY}}
    cache.path.write_text(json.dumps(bad))
    assert cache.get("bad") is None
    assert cache.get("good") == ENTRY
    cache.put("new", ENTRY)
    assert set(json.loads(cache.path.read_text())["entries"]) == {"good", "new"}


def test_concurrent_writers_keep_every_entry(cache):
    writer = Path(__file__).with_name("cache_writer.py")
    root = str(Path(__file__).parents[2])
    env = {"PYTHONPATH": root}
    procs = [
        subprocess.Popen(
            [sys.executable, str(writer), str(cache.directory), f"w{n}", "15"],
            env={**__import__("os").environ, **env},
        )
        for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    entries = json.loads(cache.path.read_text())["entries"]
    assert set(entries) == {f"w{n}-{i}" for n in range(4) for i in range(15)}
    assert not list(cache.directory.glob(".winners.*.tmp")), "no temporary files left"


def test_unwritable_directory_is_a_cache_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CacheError, match="TILEFUSE_CACHE_DIR"):
        WinnersCache(blocker / "autotune").put("k", ENTRY)


def test_invalid_entry_is_refused(cache):
    with pytest.raises(ValueError, match="needs"):
        cache.put("k", {"provider": "p"})
