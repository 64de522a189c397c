"""The bounded cache of shape-specialized variants of a graph with symbolic sizes.

Dynamo hands tilefuse one graph with symbolic sizes (``dynamic=True``). Where tilefuse
does not compile it once for every size (here: ``TILEFUSE_DYNAMIC_SIZES=0``; elsewhere a
step that cannot handle a symbol, see test_symbolic_sizes.py), it compiles it per
concrete shape and keeps at most ``TILEFUSE_MAX_SPECIALIZATIONS`` variants, least
recently used dropped first. Every result is checked against eager, and the counters of
``tilefuse.stats()`` against what the LRU must have done.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters as dynamo_counters

import tilefuse
from tests.compile_check import assert_same
from tilefuse import config
from tilefuse.errors import TilefuseError
from tilefuse.report import collect_reports

COLS = 7


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x * 2, -1) + x.sum(0)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(config.MAX_SPECIALIZATIONS_ENV, raising=False)
    monkeypatch.setenv("TILEFUSE_DYNAMIC_SIZES", "0")  # the specializing path
    torch._dynamo.reset()
    dynamo_counters.clear()
    tilefuse.reset()
    yield
    torch._dynamo.reset()
    tilefuse.reset()


def _run(compiled, rows: int) -> None:
    x = torch.randn(rows, COLS)
    try:
        assert_same(compiled(x), _fn(x))
    except AssertionError as exc:
        raise AssertionError(f"output at {rows} rows differs from eager: {exc}") from exc


def _counts() -> tuple[int, int]:
    stats = tilefuse.stats()
    assert stats["graphs_fallen_back"] == 0, f"a graph ran eagerly: {stats}"
    return stats["specializations_compiled"], stats["specializations_evicted"]


def test_lru_of_two_over_five_sizes_recompiles_an_evicted_shape(monkeypatch):
    monkeypatch.setenv(config.MAX_SPECIALIZATIONS_ENV, "2")
    compiled = torch.compile(_fn, backend="tilefuse", dynamic=True)
    with collect_reports() as reports:
        for rows in [2, 3, 4, 5, 6]:  # no size 1: Dynamo specializes 0 and 1
            _run(compiled, rows)
    assert _counts() == (5, 3)
    assert tilefuse.stats()["graphs_compiled"] == 5
    # One Dynamo graph (with symbolic sizes) serves every size: no Dynamo recompile.
    assert dynamo_counters["stats"]["unique_graphs"] == 1
    assert dynamo_counters["frames"]["ok"] == 1

    # Kept: 5 and 6 (most recent last). 2 was evicted: it compiles again, evicting 5.
    _run(compiled, 2)
    assert _counts() == (6, 4)
    _run(compiled, 6)  # kept: a hit, which makes 6 the most recently used
    assert _counts() == (6, 4)
    _run(compiled, 5)  # least recently used is now 2 (not 6, the older insert): 2 goes
    assert _counts() == (7, 5)
    _run(compiled, 6)
    assert _counts() == (7, 5)
    assert dynamo_counters["stats"]["unique_graphs"] == 1

    assert len(reports) == 5
    for report in reports:
        assert "has symbolic sizes" in report.specialization, report.format()
        assert "of at most 2 (TILEFUSE_MAX_SPECIALIZATIONS)" in report.specialization
    assert "variant 5 compiled for it, 2 kept" in reports[-1].specialization
    assert reports[0].specialization in reports[0].format()


def test_compile_option_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(config.MAX_SPECIALIZATIONS_ENV, "8")
    options = {"max_specializations": 1}
    compiled = torch.compile(_fn, backend="tilefuse", dynamic=True, options=options)
    for rows in [2, 3, 2]:
        _run(compiled, rows)
    assert _counts() == (3, 2)


def test_default_limit_keeps_every_variant_and_reset_zeroes_the_counters():
    assert config.max_specializations() == config.DEFAULT_MAX_SPECIALIZATIONS == 16
    compiled = torch.compile(_fn, backend="tilefuse", dynamic=True)
    for rows in [2, 3, 2, 3]:
        _run(compiled, rows)
    assert _counts() == (2, 0)
    tilefuse.reset()
    stats = tilefuse.stats()
    assert stats["specializations_compiled"] == stats["specializations_evicted"] == 0


def test_forward_and_backward_through_evicted_variants(monkeypatch):
    monkeypatch.setenv(config.MAX_SPECIALIZATIONS_ENV, "1")
    weight = torch.randn(COLS)

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * w).sum(-1)

    compiled = torch.compile(fn, backend="tilefuse", dynamic=True)
    for rows in [2, 3, 2]:
        x = torch.randn(rows, COLS)
        we, wc = weight.clone().requires_grad_(), weight.clone().requires_grad_()
        expected, actual = fn(x, we), compiled(x, wc)
        assert_same(actual, expected)
        seed = torch.randn_like(expected)
        (expected * seed).sum().backward()
        (actual * seed).sum().backward()
        assert_same(wc.grad, we.grad)
    assert _counts() == (3, 2)
    # Each variant compiled its forward and its backward graph.
    assert tilefuse.stats()["graphs_compiled"] == 6


@pytest.mark.parametrize("raw", ["0", "-2", "many", "1.5"])
def test_bad_setting_is_a_clear_error_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(config.MAX_SPECIALIZATIONS_ENV, raw)
    message = f"TILEFUSE_MAX_SPECIALIZATIONS={raw!r} is not a positive integer"
    with pytest.raises(TilefuseError, match=message):
        config.max_specializations()
    # Reported when torch.compile hands tilefuse a graph, before any work.
    compiled = torch.compile(_fn, backend="tilefuse", dynamic=True)
    with pytest.raises(Exception, match=message):
        compiled(torch.randn(3, COLS))


@pytest.mark.parametrize("value", [0, -1, True, "4", 2.0])
def test_bad_compile_option_is_a_clear_error(value):
    compiled = torch.compile(
        _fn, backend="tilefuse", dynamic=True, options={"max_specializations": value}
    )
    with pytest.raises(Exception, match="'max_specializations'=.* is invalid; it takes a positive"):
        compiled(torch.randn(3, COLS))
