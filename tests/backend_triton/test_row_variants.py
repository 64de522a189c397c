"""Reductions over a symbolic row length run one variant per bucket of the length
(``tilefuse_triton.row_variants``): which variants are made, and that each matches eager
on the rows it serves (through the Triton interpreter)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sympy
import torch

import tilefuse
from tests.compile_check import assert_same
from tilefuse_triton import heuristics
from tilefuse_triton.row_variants import RowVariantKernel
from tilefuse_triton.scheduling import TritonScheduling


@pytest.fixture
def made(monkeypatch):
    """(bucket, persistent) of every variant rendered, in order."""
    seen: list[tuple[int | None, bool]] = []
    real = RowVariantKernel.__init__

    def spy(self, spec, render, hint_rows):
        def recording(row_length):
            kernel = render(row_length)
            seen.append((row_length, kernel.config["persistent"]))
            return kernel

        real(self, spec, recording, hint_rows)

    monkeypatch.setattr(RowVariantKernel, "__init__", spy)
    return seen


def test_each_bucket_of_the_row_length_gets_its_own_variant(made):
    def fn(x):
        return torch.softmax(x, -1), x.sum(-1)

    tilefuse.reset()
    compiled = torch.compile(fn, backend="tilefuse")
    for n in (40, 33, 64, 300, 9000, 17, 17000):
        x = torch.randn(3, n)
        torch._dynamo.mark_dynamic(x, 1)
        assert_same(compiled(x), fn(x))
    assert tilefuse.stats()["graphs_compiled_symbolic"] == 1, tilefuse.stats()
    # 40 and 33 share the bucket 64 with 64 itself; 9000 is past the persistent limit,
    # where a static row of 16384 loops too; 17 reaches the bucket 32; 17000's bucket
    # renders the same looped kernel as 9000's, and runs that one.
    buckets = [b for b, _ in made]
    assert buckets == [64, 512, 16384, 32, 32768], made
    assert [p for _, p in made] == [True, True, False, True, False], made


def test_a_policy_block_too_short_for_the_row_keeps_the_variant_looped(monkeypatch):
    """A scheduling policy's RBLOCK over a persistent variant would leave part of the row
    unreduced; the variant then loops."""

    class Policy:
        name = "short-rows"

        def tiling(self, spec, device):
            return {"RBLOCK": 16}

    spec = SimpleNamespace(rnumel=sympy.Symbol("s0"))
    scheduling = TritonScheduling(SimpleNamespace(policy=Policy(), device="cpu"))
    base = {"XBLOCK": 1, "RBLOCK": 64, "num_warps": 2, "persistent": True, "int64": True}
    monkeypatch.setattr(heuristics, "choose_config", lambda spec, row_length=None: dict(base))
    assert scheduling._config(spec, 64)["persistent"] is False  # 16 of a row of 64
    assert scheduling._config(spec, 16)["persistent"] is True
    assert scheduling._config(spec)["persistent"] is False  # a row of any length
