"""One nvcc build per kernel class, never per shape; the max-mode compile budget.

Most tests here replace nvcc with a fake that writes a stand-in ``.so`` (the cache logic
is what they check); one compiles for real, and reuses the build of ``test_compile`` when
both run in one session.
"""

from __future__ import annotations

import subprocess
import time

import pytest

import tilefuse
from tests.backend_cuda.cases import Case, make_case
from tests.backend_cuda.families import FAMILIES
from tests.backend_cuda.toolchain_marks import needs_toolchain
from tilefuse.errors import ChoiceFailed, TilefuseError
from tilefuse_cuda import compiler, settings
from tilefuse_cuda.configs import GemmConfig, heuristic, rank
from tilefuse_cuda.problem import Dims, analyse
from tilefuse_cuda.provider import PROVIDER, CutlassGemmChoice

CONFIG = GemmConfig("cooperative", (128, 128, 64), (1, 1))
BIAS_RELU = (("add_bias_n", "n"), ("relu",))
# Same dtypes, layouts and epilogue; M, N and K all differ (M=1, N and K off the tile).
SHAPES = ((256, 128, 64), (1, 136, 200), (1000, 1032, 520))


def _choice(case: Case, config: GemmConfig = CONFIG) -> CutlassGemmChoice:
    problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
    return CutlassGemmChoice(problem, config, dims)


def _builds() -> int:
    return tilefuse.stats()["artifacts_built"]


@pytest.fixture
def fake_nvcc(monkeypatch, tmp_path):
    """A private cache and an nvcc that writes a stand-in ``.so``; yields its call log."""
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        out = cmd[cmd.index("-o") + 1]
        with open(out, "wb") as f:
            f.write(b"not really a shared object: " + cmd[-3].encode())
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(compiler.subprocess, "run", run)
    return calls


@needs_toolchain
def test_build_key_ignores_sizes_and_follows_the_kernel_class():
    keys = {_choice(make_case("mm", m, n, k, steps=BIAS_RELU)).build_key() for m, n, k in SHAPES}
    assert len(keys) == 1
    (key,) = keys
    batched = {
        _choice(make_case("bmm", m, 128, 64, batch=b, steps=(("relu",),))).build_key()
        for m, b in ((64, 2), (1, 7))
    }
    assert len(batched) == 1 and key not in batched
    others = {
        "epilogue": make_case("mm", 256, 128, 64, steps=(("add_bias_n", "n"), ("gelu_erf",))),
        "dtype": make_case("mm", 256, 128, 64, dtype="float16", steps=BIAS_RELU),
        "out dtype": make_case("mm", 256, 128, 64, out_dtype="float32", steps=BIAS_RELU),
        "layout": make_case("mm", 256, 128, 64, a_col=True, steps=BIAS_RELU),
    }
    for what, case in others.items():
        assert _choice(case).build_key() != key, f"a different {what} shares the build"
    other_config = GemmConfig("pingpong", (64, 128, 64), (1, 1))
    assert _choice(make_case("mm", 256, 128, 64, steps=BIAS_RELU), other_config).build_key() != key


@needs_toolchain
def test_second_shape_builds_nothing_another_epilogue_or_dtype_does(fake_nvcc):
    before = _builds()
    paths = [_choice(make_case("mm", m, n, k, steps=BIAS_RELU)).compile() for m, n, k in SHAPES]
    assert len(fake_nvcc) == 1 and _builds() - before == 1
    assert len(set(paths)) == 1
    gelu = make_case("mm", *SHAPES[1], steps=(("add_bias_n", "n"), ("gelu_erf",)))
    fp16 = make_case("mm", *SHAPES[1], dtype="float16", steps=BIAS_RELU)
    assert _choice(gelu).compile() not in paths
    assert _choice(fp16).compile() not in paths
    assert len(fake_nvcc) == 3 and _builds() - before == 3


@needs_toolchain
def test_real_build_serves_another_shape_without_nvcc():
    """A real sm_90a build (shared with test_compile's family through the cache), then a
    request of other M, N and K finds it: no nvcc run, the same ``.so``."""
    config, family = FAMILIES["ping_mm_plain_cluster2"]
    first = _choice(family, config).compile()
    before = _builds()
    other = _choice(make_case("mm", 1000, 1032, 520, a_col=True), config)
    assert other.compile() == first and _builds() == before
    log = (first.parent / "nvcc.log").read_text()
    # The sm_90a cubin only: no ``-arch=`` (it adds a compute_90a PTX pass), no PTX target.
    assert "code=sm_90a" in log and "-arch=" not in log and "code=compute_" not in log


@needs_toolchain
def test_max_mode_offers_max_candidates_ranked(monkeypatch):
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "max")
    case = make_case("mm", 4096, 4096, 4096, steps=BIAS_RELU)

    def offered():
        return list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))

    dims = Dims(4096, 4096, 4096, 1)
    for n in (1, 3):
        monkeypatch.setenv(settings.MAX_CANDIDATES_ENV, str(n))
        assert [c.config for c in offered()] == rank(dims)[:n]
    monkeypatch.setenv(settings.MAX_CANDIDATES_ENV, "100")
    assert [c.config for c in offered()] == rank(dims)
    monkeypatch.delenv(settings.MAX_CANDIDATES_ENV)
    assert len(offered()) == min(len(rank(dims)), settings.max_candidates())
    assert settings.max_candidates() >= settings.MIN_MAX_CANDIDATES
    for bad in ("0", "-2", "four"):
        monkeypatch.setenv(settings.MAX_CANDIDATES_ENV, bad)
        with pytest.raises(TilefuseError, match=settings.MAX_CANDIDATES_ENV):
            offered()


def test_rank_puts_the_heuristic_first_and_spans_tiles_before_variants():
    for dims in (Dims(8192, 8192, 8192, 1), Dims(1, 4096, 4096, 1), Dims(512, 512, 512, 4)):
        ranked = rank(dims)
        assert ranked[0] == heuristic(dims)
        assert len(set(ranked)) == len(ranked)
        shapes = [(c.schedule, c.tile) for c in ranked]
        distinct = len(set(shapes))
        assert len(set(shapes[:distinct])) == distinct  # every (schedule, tile) before a repeat
    big = rank(Dims(8192, 8192, 8192, 1))
    assert {c.schedule for c in big[:4]} == {"cooperative", "pingpong"}


@needs_toolchain
def test_compile_budget_stops_new_builds_not_cached_ones(monkeypatch, fake_nvcc):
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "max")
    monkeypatch.setenv(settings.MAX_CANDIDATES_ENV, "3")
    monkeypatch.setenv(settings.COMPILE_BUDGET_ENV, "30")
    case = make_case("mm", 4096, 4096, 4096, steps=BIAS_RELU)
    choices = list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))
    assert choices[0].build_deadline is None  # the heuristic pick is always built
    assert all(c.build_deadline and c.build_deadline > time.time() for c in choices[1:])
    choices[1].compile()  # within the budget: built
    assert len(fake_nvcc) == 1
    for c in choices[1:]:
        c.build_deadline = time.time() - 1  # the budget is spent
    choices[1].compile()  # cached: returned whatever the time
    with pytest.raises(ChoiceFailed, match=settings.COMPILE_BUDGET_ENV):
        choices[2].compile()
    choices[0].compile()
    assert len(fake_nvcc) == 2
    monkeypatch.setenv(settings.COMPILE_BUDGET_ENV, "0")
    assert all(
        c.build_deadline is None
        for c in PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue)
    )
    monkeypatch.setenv(settings.COMPILE_BUDGET_ENV, "soon")
    with pytest.raises(TilefuseError, match=settings.COMPILE_BUDGET_ENV):
        list(PROVIDER.choices(case.op, case.specs, case.layout, case.epilogue))


@needs_toolchain
def test_build_cached_tells_the_autotuner_a_build_would_be_a_cache_hit(fake_nvcc, tmp_path):
    choice = _choice(make_case("mm", 256, 128, 64, steps=BIAS_RELU))
    other_shape = _choice(make_case("mm", 1, 136, 200, steps=BIAS_RELU))
    assert not choice.build_cached() and not other_shape.build_cached()
    built = choice.compile()
    assert choice.build_cached() and other_shape.build_cached()  # one build serves both
    built.write_bytes(b"changed after the build")  # fails its hash: not a cached build
    assert not choice.build_cached()
