"""hipcc builds one kernel per template family, the disk cache serves repeats, and a compile
error drops the choice with the source path. Skipped, with the reason, where hipcc is absent.

The target is gfx90a (CDNA2, has every MFMA instruction the templates use): Debian's hipcc
5.2 (clang 15) predates gfx942. Override with TILEFUSE_ROCM_TEST_ARCH.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.backend_rocm.cases import epilogues, problem
from tilefuse.errors import ChoiceFailed
from tilefuse_rocm import compiler, toolchain
from tilefuse_rocm.gemm_spec import MFMA_CONFIGS, SIMT_CONFIGS
from tilefuse_rocm.provider import RocmGemmChoice

ARCH = os.environ.get("TILEFUSE_ROCM_TEST_ARCH", "gfx90a")
needs_hipcc = pytest.mark.skipif(
    toolchain.find_hipcc() is None,
    reason="hipcc not installed (apt-get install hipcc libamdhip64-dev)",
)

# (op, dtype, (A layout, B layout), config, with the chained epilogue?): both SIMT layout
# orders and each of the three MFMA instructions; kept few, each hipcc run takes seconds.
FAMILIES = [
    ("addmm", "bfloat16", ("row", "col"), SIMT_CONFIGS[1], True),
    ("bmm", "float16", ("col", "row"), SIMT_CONFIGS[0], True),
    ("addmm", "bfloat16", ("row", "row"), MFMA_CONFIGS[2], True),
    ("bmm", "float16", ("col", "col"), MFMA_CONFIGS[0], True),
    ("mm", "float32", ("row", "col"), MFMA_CONFIGS[1], False),
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    return tmp_path / "rocm"


@needs_hipcc
def test_one_kernel_per_family_compiles(cache, monkeypatch):
    choices = []
    for op, dtype, layouts, config, chained in FAMILIES:
        epi = epilogues(op, dtype)[-1 if chained else 0]
        choices.append(RocmGemmChoice(problem(op, dtype, layouts, epi), config, ARCH))
    results = compiler.compile_all(choices, lambda c: c.compile())
    failures = [f"{c.name}: {err}" for c, err in results if err is not None]
    assert not failures, "\n".join(failures)
    for choice in choices:
        assert choice._so_path is not None and choice._so_path.parents[2] == cache
        nm = subprocess.run(["nm", "-D", str(choice._so_path)], capture_output=True, text=True)
        assert "tilefuse_rocm_launch" in nm.stdout
    # A repeat is a cache hit: hipcc must not run again.
    source = choices[0].source()
    first = compiler.compile_source(source, ARCH)

    def no_hipcc(*args, **kwargs):
        raise AssertionError("hipcc ran on a cache hit")

    monkeypatch.setattr(compiler.subprocess, "run", no_hipcc)
    assert compiler.compile_source(source, ARCH) == first


@needs_hipcc
def test_compile_error_names_the_source(cache):
    with pytest.raises(ChoiceFailed) as info:
        compiler.compile_source("this is not C++;\n", ARCH, name="broken")
    message = str(info.value)
    assert "broken: hipcc failed" in message and ".hip" in message
    kept = [p for p in cache.rglob("*.hip")]
    assert len(kept) == 1 and str(kept[0]) in message
    assert not list(cache.rglob("*.so")), "a failed build must not publish an object"


def test_missing_hipcc_fails_the_choice(cache, monkeypatch):
    monkeypatch.setattr(toolchain, "find_hipcc", lambda: None)
    with pytest.raises(ChoiceFailed, match="hipcc not found"):
        compiler.compile_source("int x;\n", ARCH)


def test_cache_key_covers_toolchain_and_arch():
    base = compiler.cache_key("src", "gfx90a", "HIP version: 5.2")
    assert base != compiler.cache_key("src", "gfx942", "HIP version: 5.2")
    assert base != compiler.cache_key("src", "gfx90a", "HIP version: 6.2")
    assert base != compiler.cache_key("src2", "gfx90a", "HIP version: 5.2")
