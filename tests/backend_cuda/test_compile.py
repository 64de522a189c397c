"""Real nvcc compiles of one kernel per family (sm_90a), and the compiler's failure paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.backend_cuda.families import FAMILIES
from tests.backend_cuda.toolchain_marks import needs_toolchain
from tilefuse.errors import ChoiceFailed
from tilefuse_cuda import compiler, toolchain
from tilefuse_cuda.problem import analyse
from tilefuse_cuda.provider import CutlassGemmChoice


def _choice(family: str) -> CutlassGemmChoice:
    config, case = FAMILIES[family]
    problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
    return CutlassGemmChoice(problem, config, dims)


@pytest.fixture(scope="module")
def compiled() -> dict[str, Path | ChoiceFailed]:
    """Every family compiled once, in parallel, through the on-disk cache."""
    choices = {name: _choice(name) for name in FAMILIES}
    results = compiler.compile_many([(c.name, c.source()) for c in choices.values()], workers=2)
    return dict(zip(choices, results))


@needs_toolchain
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_compiles_for_sm90a(compiled, family):
    result = compiled[family]
    if isinstance(result, ChoiceFailed):
        pytest.fail(f"{family} did not compile: {result}")
    assert result.name == "kernel.so" and result.stat().st_size > 0
    log = (result.parent / "nvcc.log").read_text()
    assert compiler.SERIALIZED_WGMMA not in log
    assert "-DNDEBUG" in log and "code=sm_90a" in log
    # A second request is a cache hit: same path, no nvcc.
    assert compiler.compile_source(_choice(family).source()) == result


def _fake_nvcc(monkeypatch, returncode: int, output: str) -> None:
    def run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=output)

    monkeypatch.setattr(compiler.subprocess, "run", run)


@needs_toolchain
def test_serialized_wgmma_warning_fails_the_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    warning = (
        "ptxas info    : (C7510) Potential Performance Loss: "
        "wgmma.mma_async instructions are serialized"
    )
    _fake_nvcc(monkeypatch, 0, warning)
    with pytest.raises(ChoiceFailed, match="C7510") as err:
        compiler.compile_source("// a kernel\n", "k")
    assert "kernel.cu" in str(err.value)
    assert not list(tmp_path.rglob("kernel.so"))


@needs_toolchain
def test_compile_error_names_the_source(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    _fake_nvcc(monkeypatch, 2, 'kernel.cu(3): error: identifier "x" is undefined')
    with pytest.raises(ChoiceFailed, match="nvcc failed") as err:
        compiler.compile_source("// broken\n", "k")
    cu = next(tmp_path.rglob("kernel.cu"))
    assert str(cu) in str(err.value) and cu.read_text() == "// broken\n"


def test_missing_cutlass_names_the_package(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(toolchain.importlib.metadata, "distribution", missing)
    with pytest.raises(toolchain.ToolchainMissing, match="pip install nvidia-cutlass"):
        toolchain.cutlass_headers()
