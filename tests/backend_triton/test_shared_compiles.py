"""Triton's compiled kernels shared through the remote cache (``shared_compiles``).

A real Triton compile for an sm90 target runs here without a GPU (Triton's own ptxas), and a
real ``redis-server`` holds the remote cache: a process with an empty Triton cache and a warm
remote cache compiles nothing, a damaged value is rejected and compiled over, and compiles
are counted with or without a remote cache.
"""

from __future__ import annotations

import base64
import json

import pytest

import tilefuse
from tilefuse import remote_cache
from tilefuse_triton import shared_compiles as shared
from tilefuse_triton.shared_compiles import compile_key, shared_compiles

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


def _add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)


def _compile():
    """What a kernel's build makes Triton do: one compile, through its file cache."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    # JITFunction itself: under TRITON_INTERPRET=1 (the tests' setting) triton.jit would
    # make an interpreted function, which does not compile.
    signature = {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    src = ASTSource(JITFunction(_add_one), signature=signature, constexprs={"BLOCK": 128})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32))


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-a"))
    monkeypatch.delenv("TILEFUSE_REMOTE_CACHE", raising=False)
    remote_cache.reset()
    tilefuse.reset()
    try:
        _compile()
    except Exception as error:  # noqa: BLE001 (any reason Triton cannot build here)
        pytest.skip(f"Triton cannot compile for sm90 on this machine: {error}")
    tilefuse.reset()
    yield
    remote_cache.reset()


def _stats(*names):
    stats = tilefuse.stats()
    return tuple(stats.get(name, 0) for name in names)


KEY = compile_key("def _add_one(...): ...", "fp32", 128)


def test_compiles_are_counted_without_a_remote_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-empty"))
    with shared_compiles(KEY):
        _compile()
    with shared_compiles(KEY):
        _compile()  # Triton's own cache hit
    assert _stats("triton_compiles", "remote_stores") == (1, 0)


def test_an_empty_triton_cache_with_a_warm_remote_one_compiles_nothing(
    server, monkeypatch, tmp_path
):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-first"))
    with shared_compiles(KEY):
        first = _compile()
    assert _stats("triton_compiles", "remote_stores", "remote_misses") == (1, 1, 1)

    tilefuse.reset()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-second"))  # another machine
    with shared_compiles(KEY):
        second = _compile()
    assert _stats("triton_compiles", "remote_hits", "remote_stores") == (0, 1, 0)
    assert second.hash == first.hash
    assert second.asm["cubin"] == first.asm["cubin"]
    assert [p.name for p in (tmp_path / "triton-second").rglob("*.cubin")] == [
        f"{first.name}.cubin"
    ]


def test_a_damaged_value_is_rejected_compiled_over_and_replaced(server, monkeypatch, tmp_path):
    with shared_compiles(KEY):
        first = _compile()
    (key,) = server.keys("tilefuse:*:triton:*")
    server.set(key, server.get(key)[:-40])  # truncated

    tilefuse.reset()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-second"))
    with shared_compiles(KEY):
        second = _compile()
    assert _stats("triton_compiles", "remote_rejected", "remote_stores") == (1, 1, 1)
    assert second.asm["cubin"] == first.asm["cubin"]

    tilefuse.reset()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-third"))
    with shared_compiles(KEY):
        _compile()
    assert _stats("triton_compiles", "remote_hits") == (0, 1)


def test_an_error_in_the_block_passes_through_and_publishes_nothing(server):
    with pytest.raises(ZeroDivisionError), shared_compiles(KEY):
        _compile()
        _ = 1 / 0
    assert _stats("remote_stores") == (0,)


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
        _payload(hash="../../etc"),
        _payload(group="missing.json"),
        _payload(files={"../k.json": "e30="}, group="../k.json"),
        _payload(files={"k.json": "not base64!"}),
        _payload(files={".hidden": "e30=", "k.json": "e30="}),
    ],
    ids=["not-json", "empty", "bad-hash", "group-absent", "path", "base64", "dotfile"],
)
def test_only_plain_files_under_a_hash_are_ever_written(payload):
    assert not shared._valid(payload)


def test_a_well_formed_payload_is_accepted():
    assert shared._valid(_payload())
