"""The remote cache (``TILEFUSE_REMOTE_CACHE``) against a real ``redis-server``: values are
verified before use, a bad one is rejected and rebuilt locally, and a server that is down
or slow costs one warning and never an error."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest

import tilefuse
from tests.redis_server import free_port
from tilefuse import remote_cache
from tilefuse.codegen import kernel_cache
from tilefuse.errors import CacheError

KIND = "remote-test"
KEY = "ab" * 32
SOURCE = "def answer(x):\n    return 42 + x - x\n"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache-a"))
    monkeypatch.delenv("TILEFUSE_REMOTE_CACHE", raising=False)
    remote_cache.reset()
    tilefuse.reset()
    yield
    remote_cache.reset()


def _other_machine(monkeypatch, tmp_path, name):
    """Another process's view: an empty local cache of its own."""
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / name))


def _builder(payload: bytes):
    calls = []

    def build(entry: Path, out: Path) -> None:
        calls.append(entry)
        out.write_bytes(payload)

    return build, calls


def _remote_warnings(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and "remote" in r.message]


def test_an_artifact_built_once_is_fetched_verified_by_the_next_process(
    redis_url, server, monkeypatch, tmp_path
):
    payload = b"\x7fELF pretend shared object " + bytes(range(256))
    build, calls = _builder(payload)
    first = kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
    assert len(calls) == 1 and first.read_bytes() == payload
    stats = tilefuse.stats()
    assert (stats["artifacts_built"], stats["remote_misses"], stats["remote_stores"]) == (1, 1, 1)
    stored = server.get(remote_cache.remote_key("artifact", KIND, KEY, "kernel.so"))
    assert stored is not None and stored.endswith(payload)

    _other_machine(monkeypatch, tmp_path, "cache-b")
    tilefuse.reset()
    second = kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
    assert len(calls) == 1, "the second local cache must not build"
    assert second != first and second.read_bytes() == payload
    assert kernel_cache.verified_artifact(second)  # published locally with its record
    stats = tilefuse.stats()
    assert (stats["artifacts_built"], stats["remote_hits"], stats["remote_stores"]) == (0, 1, 0)


def _truncate(value: bytes) -> bytes:
    return value[:-7]


def _flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0xFF])


def _garbage(value: bytes) -> bytes:
    return b"not an envelope at all"


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte, _garbage])
def test_a_corrupt_or_truncated_artifact_is_rejected_and_rebuilt(
    redis_url, server, monkeypatch, tmp_path, caplog, damage
):
    payload = b"the built artifact " * 50
    build, calls = _builder(payload)
    kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
    key = remote_cache.remote_key("artifact", KIND, KEY, "kernel.so")
    good = server.get(key)
    server.set(key, damage(good))

    tilefuse.reset()
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        _other_machine(monkeypatch, tmp_path, "cache-b")
        path = kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
        assert server.get(key) == good, "the local rebuild replaces the bad value"
        server.set(key, damage(good))
        _other_machine(monkeypatch, tmp_path, "cache-c")
        kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
    assert len(calls) == 3, "a rejected value must be rebuilt locally"
    assert path.read_bytes() == payload and kernel_cache.verified_artifact(path)
    stats = tilefuse.stats()
    assert (stats["remote_rejected"], stats["remote_hits"], stats["remote_errors"]) == (2, 0, 0)
    warnings = _remote_warnings(caplog)
    assert len(warnings) == 1 and "does not match its key or hash" in warnings[0].message


def test_a_value_stored_under_another_key_is_rejected(redis_url, server, monkeypatch, tmp_path):
    build, calls = _builder(b"artifact one")
    kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
    other = KEY[:-2] + "ff"
    server.set(
        remote_cache.remote_key("artifact", KIND, other, "kernel.so"),
        server.get(remote_cache.remote_key("artifact", KIND, KEY, "kernel.so")),
    )
    _other_machine(monkeypatch, tmp_path, "cache-b")
    tilefuse.reset()
    build_other, other_calls = _builder(b"artifact two")
    path = kernel_cache.build_artifact(KIND, other, "kernel.so", build_other)
    assert len(other_calls) == 1 and path.read_bytes() == b"artifact two"
    assert tilefuse.stats()["remote_rejected"] == 1


def test_a_source_entry_is_recovered_from_the_remote_only_when_it_hashes_to_its_key(
    redis_url, server, monkeypatch, tmp_path
):
    path_a = kernel_cache.store_source(KIND, SOURCE)
    key = path_a.stem
    _other_machine(monkeypatch, tmp_path, "cache-b")
    path_b = kernel_cache.cache_subdir(KIND) / key[:2] / f"{key}.py"
    module = kernel_cache.load_module(path_b, "tilefuse_remote_test_recovered")
    assert module.answer(1) == 42 and tilefuse.stats()["remote_hits"] == 1

    # A well-formed envelope whose source does not hash to the key: never executed.
    forged = "raise SystemExit('planted')\n"
    rkey = remote_cache.remote_key("source", KIND, key)
    server.set(rkey, remote_cache.envelope(rkey, forged.encode()))
    _other_machine(monkeypatch, tmp_path, "cache-c")
    path_c = kernel_cache.cache_subdir(KIND) / key[:2] / f"{key}.py"
    with pytest.raises(CacheError, match="does not match its key"):
        kernel_cache.load_module(path_c, "tilefuse_remote_test_forged")
    assert tilefuse.stats()["remote_rejected"] == 1
    assert "tilefuse_remote_test_forged" not in sys.modules


def test_a_server_that_is_down_costs_one_warning_and_the_local_cache_works(monkeypatch, caplog):
    monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", f"redis://127.0.0.1:{free_port()}/0")
    build, calls = _builder(b"built here")
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        first = kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
        second = kernel_cache.build_artifact(KIND, KEY[:-2] + "ee", "kernel.so", build)
        kernel_cache.store_source(KIND, SOURCE)
    assert first.read_bytes() == second.read_bytes() == b"built here" and len(calls) == 2
    warnings = _remote_warnings(caplog)
    assert len(warnings) == 1, [w.message for w in warnings]
    assert "TILEFUSE_REMOTE_CACHE=redis://127.0.0.1" in warnings[0].message
    assert "local cache only" in warnings[0].message
    stats = tilefuse.stats()
    assert (stats["remote_errors"], stats["artifacts_built"], stats["remote_hits"]) == (1, 2, 0)
    assert not remote_cache.enabled()


def test_a_server_that_does_not_answer_times_out_once(monkeypatch, caplog):
    """A listener that accepts connections and never replies: the read times out after
    ``OP_TIMEOUT_S`` and the remote cache is off for the rest of the process."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", f"redis://127.0.0.1:{port}/0")
        build, calls = _builder(b"built here")
        with caplog.at_level(logging.WARNING, logger="tilefuse"):
            kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
            kernel_cache.build_artifact(KIND, KEY[:-2] + "ee", "kernel.so", build)
    assert len(calls) == 2 and len(_remote_warnings(caplog)) == 1
    assert "Timeout" in _remote_warnings(caplog)[0].message
    assert tilefuse.stats()["remote_errors"] == 1


def test_without_the_redis_package_one_warning_names_the_extra(monkeypatch, caplog):
    monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    build, calls = _builder(b"built here")
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        kernel_cache.build_artifact(KIND, KEY, "kernel.so", build)
        kernel_cache.build_artifact(KIND, KEY[:-2] + "ee", "kernel.so", build)
    warnings = _remote_warnings(caplog)
    assert len(calls) == 2 and len(warnings) == 1
    assert "tilefuse-core[redis]" in warnings[0].message


def test_a_password_never_reaches_the_warning(monkeypatch, caplog):
    monkeypatch.setenv("TILEFUSE_REMOTE_CACHE", f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        assert remote_cache.get("artifact", KIND, KEY) is None
    assert "s3cret" not in caplog.text and "user:***@127.0.0.1" in caplog.text


def test_keys_carry_the_prefix_and_escape_separators():
    assert remote_cache.remote_key("artifact", KIND, KEY, "kernel.so") == (
        f"tilefuse:v1:artifact:{KIND}:{KEY}:kernel.so"
    )
    assert remote_cache.remote_key("artifact", "a:b", "c") != remote_cache.remote_key(
        "artifact", "a", "b:c"
    )
    with pytest.raises(ValueError):
        remote_cache.remote_key("artifact", "")
