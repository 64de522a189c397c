"""The split-reduction plan (``frontend.lowerings.split_reduction``) and its setting."""

from __future__ import annotations

import pytest
import sympy
import torch

from tilefuse import config
from tilefuse.compile_options import parse
from tilefuse.errors import TilefuseError
from tilefuse.frontend.lowerings import split_reduction as sr


@pytest.mark.parametrize("outputs", [1, 3, 64, 255, 256])
@pytest.mark.parametrize(
    "numel", [sr.MIN_PROGRAM_ELEMENTS, sr.MIN_PROGRAM_ELEMENTS + 1, 99991, 2**20, 2**26]
)
def test_plan_covers_every_element_with_no_empty_chunk(outputs, numel):
    plan = sr.split_plan(outputs, numel)
    assert plan is not None
    assert plan.chunks >= 2
    assert (plan.chunks - 1) * plan.chunk < numel <= plan.chunks * plan.chunk
    assert outputs * plan.chunks <= sr.TARGET_PROGRAMS
    assert plan.chunk >= sr.MIN_CHUNK
    assert plan.chunk % sr.CHUNK_ALIGN == 0


def test_real_sizes_fill_the_machine():
    whole = sr.split_plan(1, 2**26)  # x.sum() of 2**26 floats
    per_channel = sr.split_plan(64, 64 * 56 * 56)  # batch norm over [64, 64, 56, 56]
    assert whole is not None and whole.chunks == sr.TARGET_PROGRAMS
    assert per_channel is not None and 64 * per_channel.chunks == sr.TARGET_PROGRAMS


@pytest.mark.parametrize(
    ("outputs", "numel"),
    [
        (1, 2 * sr.MIN_CHUNK - 1),
        (67, 20000),  # a softmax's rows: one program per row takes about a launch's time
        (1, sr.MIN_PROGRAM_ELEMENTS - 1),
        (sr.MAX_OUTPUTS + 1, 2**24),
        (0, 2**20),
        (1, 1),
    ],
    ids=["too-short", "short-rows", "short-program", "many-outputs", "no-outputs", "one-element"],
)
def test_no_plan_where_splitting_cannot_help(outputs, numel):
    assert sr.split_plan(outputs, numel) is None


def test_column_reductions_are_judged_by_their_tiles():
    # a bias gradient: 768 columns over 4096 rows, 24 tiles of 32 columns
    plan = sr.split_plan(768, 4096, columns=True)
    assert plan is not None and plan.columns
    assert 768 // sr.COLUMN_TILE * plan.chunks <= sr.TARGET_PROGRAMS
    assert sr.COLUMN_TILE * plan.chunk >= sr.MIN_CHUNK  # elements per program
    assert sr.split_plan(768, 4096) is None  # as outputs, 768 looked like plenty
    assert sr.split_plan(sr.MAX_OUTPUTS * sr.COLUMN_TILE + 1, 2**20, columns=True) is None
    assert sr.split_plan(4, 2**20, columns=True).chunk >= sr.MIN_CHUNK // 4  # a narrow tile


def test_unsplittable_types_and_symbolic_sizes_have_no_plan():
    big = (sympy.Integer(2**20),)
    one = (sympy.Integer(1),)
    assert sr.plan_for(one, big, "sum") is not None
    for kind in ("argmax", "argmin", "logsumexp"):
        assert sr.plan_for(one, big, kind) is None
    s0 = sympy.Symbol("s0", integer=True, positive=True)
    assert sr.plan_for(one, (s0 * 2**20,), "sum") is None
    assert sr.plan_for((s0,), big, "sum") is None


@pytest.mark.parametrize(
    ("kind", "dtype", "value"),
    [
        ("sum", torch.float32, 0),
        ("prod", torch.float32, 1),
        ("any", torch.bool, False),
        ("max", torch.float32, float("-inf")),
        ("min", torch.float32, float("inf")),
        ("max", torch.int32, torch.iinfo(torch.int32).min),
        ("min", torch.int64, torch.iinfo(torch.int64).max),
        ("argmax", torch.float32, None),
    ],
)
def test_identity(kind, dtype, value):
    assert sr.identity(kind, dtype) == value


@pytest.mark.parametrize(
    ("raw", "want"), [("", "auto"), ("auto", "auto"), ("1", "on"), ("on", "on"), ("0", "off")]
)
def test_setting_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", raw)
    assert config.split_reductions() == want


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "sometimes")
    with pytest.raises(TilefuseError, match="TILEFUSE_SPLIT_REDUCTIONS='sometimes'") as err:
        config.split_reductions()
    assert "auto" in str(err.value)  # the message names every accepted value


def test_option_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("TILEFUSE_SPLIT_REDUCTIONS", "on")
    with config.overrides(parse(None, {"split_reductions": False})):
        assert config.split_reductions() == "off"
    with config.overrides(parse(None, {"split_reductions": "auto"})):
        assert config.split_reductions() == "auto"
    with pytest.raises(TilefuseError, match="'split_reductions'='yes' is invalid"):
        parse(None, {"split_reductions": "yes"})
