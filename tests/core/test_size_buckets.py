"""The per-bucket pick of a symbolic-size GEMM template (``codegen.size_buckets``), with a
stand-in selector: which problem it is asked about, how often, and what runs when it
fails."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sympy
import torch

import tilefuse
from tilefuse import plugin
from tilefuse.codegen import size_buckets
from tilefuse.codegen.size_buckets import BucketedChoice, bucket_of, grows_with_symbols
from tilefuse.errors import CompileError

S = sympy.Symbol("s0", integer=True, positive=True)


class _Step:
    """A template step of ``x[s0, 8] @ w[8, 4]``: ``request`` as TemplateStep's."""

    op = "mm"

    def request(self, values):
        m = int(S.subs(values))
        a = plugin.TensorSpec((m, 8), (8, 1), "float32", "cpu")
        b = plugin.TensorSpec((8, 4), (4, 1), "float32", "cpu")
        out = plugin.TensorSpec((m, 4), (4, 1), "float32", "cpu")
        return "mm", (a, b), out, plugin.Epilogue((), (), "float32")


class _Choice:
    def __init__(self, any_size: bool, asked: int) -> None:
        self.any_size = any_size
        self.asked = asked  # the M the selector was asked about
        self.runs: list[int] = []

    def compile(self) -> None:
        pass

    def run(self, a, b, out):
        self.runs.append(a.shape[0])
        torch.mm(a, b, out=out)


class _Selector:
    def __init__(self, any_size: bool = True, fail: bool = False) -> None:
        self.any_size = any_size
        self.fail = fail
        self.asked: list[int] = []

    def select(self, op, inputs, layout, epilogue):
        self.asked.append(layout.shape[0])
        if self.fail:
            raise RuntimeError("no candidate")
        choice = _Choice(self.any_size, layout.shape[0])
        return SimpleNamespace(choice=choice, summary="stand-in")


def _call(choice: BucketedChoice, m: int) -> None:
    a, b = torch.randn(m, 8), torch.randn(8, 4)
    out = torch.empty(m, 4)
    choice.run(a, b, out=out, sizes=(m,))
    torch.testing.assert_close(out, a @ b)


@pytest.fixture
def selector(monkeypatch):
    chosen = _Selector()
    monkeypatch.setattr(size_buckets, "template_selector", lambda: chosen)
    tilefuse.reset()
    return chosen


def test_buckets_are_the_next_power_of_two():
    assert [bucket_of(n) for n in (1, 2, 3, 4, 5, 8, 9, 1000)] == [1, 2, 4, 4, 8, 8, 16, 1024]


def test_a_size_free_pick_is_made_once_per_bucket_at_the_buckets_size(selector):
    choice = BucketedChoice(_Step(), (S,), [S, 8 * S])
    for m in (5, 7, 8, 3, 12, 6):
        _call(choice, m)
    # asked about the representative of each bucket (8, 4, 16), never about a call's own M
    assert selector.asked == [8, 4, 16]
    assert tilefuse.stats()["gemm_bucket_selections"] == 3


def test_a_pick_for_one_size_is_made_again_for_each_exact_size(selector):
    selector.any_size = False
    choice = BucketedChoice(_Step(), (S,), [S, 8 * S])
    for m in (5, 7, 5, 8):
        _call(choice, m)
    # the bucket's question (8) found a choice that serves one size: each size asks again,
    # and the size of the bucket itself has its answer already
    assert selector.asked == [8, 5, 7]


def test_sizes_that_shrink_as_a_symbol_grows_are_picked_per_exact_size(selector):
    """A slice's length ``65 - s0`` is smaller at the rounded-up symbol: a pick made there
    could take many rows for one broadcast row; every size is asked about as it is."""
    choice = BucketedChoice(_Step(), (S,), [S, 65 - S])
    for m in (5, 7, 5):
        _call(choice, m)
    assert selector.asked == [5, 7]


def test_what_grows_with_the_symbols():
    t = sympy.Symbol("s1", integer=True, positive=True)
    assert all(grows_with_symbols(e) for e in (S, 3, 2 * S * t + 1, (S + 1) ** 2, 96 * S))
    assert not any(grows_with_symbols(e) for e in (65 - S, S - 1, -S, 1 / S, S**-1))
    from tilefuse.ir.index import FloorDiv

    assert not grows_with_symbols(FloorDiv(S, 2))


def test_a_failed_selection_runs_eager_torch_with_a_warning(selector, caplog, monkeypatch):
    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    selector.fail = True
    choice = BucketedChoice(_Step(), (S,), [S, 8 * S])
    with caplog.at_level("WARNING", logger="tilefuse"):
        _call(choice, 6)
        _call(choice, 12)  # another bucket fails too: no second warning
    assert isinstance(choice.pick((6,)), plugin.ExternChoice)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, caplog.text
    assert "selecting the GEMM kernel for mm at sizes {'s0': 8} failed" in warnings[0].getMessage()


def test_a_failed_selection_raises_under_strict_mode(selector, monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    selector.fail = True
    with pytest.raises(CompileError, match="RuntimeError|no candidate"):
        _call(BucketedChoice(_Step(), (S,), [S, 8 * S]), 6)
