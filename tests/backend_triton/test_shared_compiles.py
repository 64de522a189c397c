"""Triton's compiled kernels shared through the remote cache (``shared_compiles``).

Each "machine" is a fresh process (``shared_compiles_program.py``) with its own Triton and
tilefuse caches, compiling a real kernel for an sm90 target (no GPU needed); a real
``redis-server`` holds the remote cache. A process with an empty Triton cache and a warm
remote cache compiles nothing, a damaged value is rejected and compiled over, a process
whose Triton cache is warm asks the remote cache nothing, and compiles are counted with or
without a remote cache. Malformed payloads never reach the disk.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tilefuse_triton import shared_compiles as shared

PROGRAM = Path(__file__).with_name("shared_compiles_program.py")


def _machine(tmp_path: Path, name: str, times: int = 1, remote: str | None = None) -> dict:
    """Run the program as machine ``name`` (its caches under ``tmp_path / name``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TILEFUSE_", "TRITON_"))}  # fmt: skip
    env.update(TRITON_CACHE_DIR=str(tmp_path / name / "triton"),
               TILEFUSE_CACHE_DIR=str(tmp_path / name / "tilefuse"))  # fmt: skip
    if remote:
        env["TILEFUSE_REMOTE_CACHE"] = remote
    done = subprocess.run([sys.executable, str(PROGRAM), str(times)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


def _counts(result: dict, *names: str) -> tuple[int, ...]:
    return tuple(result["stats"].get(name, 0) for name in names)


def test_compiles_are_counted_without_a_remote_cache(tmp_path):
    result = _machine(tmp_path, "alone", times=2)  # the second is Triton's own cache hit
    assert _counts(result, "triton_compiles", "remote_stores") == (1, 0)


def test_an_empty_triton_cache_with_a_warm_remote_one_compiles_nothing(redis_url, tmp_path):
    first = _machine(tmp_path, "first", remote=redis_url)
    assert _counts(first, "triton_compiles", "remote_stores", "remote_misses") == (1, 1, 1)
    second = _machine(tmp_path, "second", remote=redis_url)
    assert _counts(second, "triton_compiles", "remote_hits", "remote_stores") == (0, 1, 0)
    assert (second["hash"], second["cubin"]) == (first["hash"], first["cubin"])
    cubins = [p.name for p in (tmp_path / "second" / "triton").rglob("*.cubin")]
    assert len(cubins) == 1, cubins


def test_a_warm_triton_cache_asks_the_remote_cache_nothing(redis_url, tmp_path):
    _machine(tmp_path, "first", remote=redis_url)
    again = _machine(tmp_path, "first", remote=redis_url)  # the same machine, a new process
    assert _counts(again, "triton_compiles", "remote_hits", "remote_misses",
                   "remote_stores") == (0, 0, 0, 0)  # fmt: skip


def test_a_damaged_value_is_rejected_compiled_over_and_replaced(redis_url, server, tmp_path):
    first = _machine(tmp_path, "first", remote=redis_url)
    (key,) = server.keys("tilefuse:*:triton:*")
    server.set(key, server.get(key)[:-40])  # truncated
    second = _machine(tmp_path, "second", remote=redis_url)
    assert _counts(second, "triton_compiles", "remote_rejected", "remote_stores") == (1, 1, 1)
    assert second["cubin"] == first["cubin"]
    third = _machine(tmp_path, "third", remote=redis_url)
    assert _counts(third, "triton_compiles", "remote_hits") == (0, 1)


def test_an_error_in_the_block_passes_through():
    with pytest.raises(ZeroDivisionError), shared.shared_compiles("0" * 64):
        _ = 1 / 0


def _payload(**changes):
    entry = {"hash": "0" * 64, "group": "k.json",
             "files": {"k.json": base64.b64encode(b"{}").decode()}}  # fmt: skip
    entry.update(changes)
    return json.dumps([entry]).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b"[" * 100000 + b"]" * 100000,
        _payload(hash="../../etc"),
        _payload(group="missing.json"),
        _payload(group="k.cubin", files={"k.cubin": "e30="}),
        _payload(files={"../k.json": "e30="}, group="../k.json"),
        _payload(files={"k.json": "not base64!"}),
        _payload(files={".hidden": "e30=", "k.json": "e30="}),
        _payload(files={"__grp__k.json": "e30=", "k.json": "e30="}),
    ],
    ids=[
        "not-json",
        "empty",
        "deep",
        "bad-hash",
        "group-absent",
        "group-not-json",
        "path",
        "base64",
        "dotfile",
        "group-file",
    ],  # fmt: skip
)
def test_only_plain_files_under_a_hash_are_ever_written(payload):
    assert not shared._valid(payload)


def test_a_well_formed_payload_is_accepted():
    assert shared._valid(_payload())
