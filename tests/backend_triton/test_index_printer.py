"""Printed index expressions must mean what the sympy expressions mean (operator precedence)."""

from __future__ import annotations

import random

import pytest
import sympy

from tilefuse.ir.index import simplify_index
from tilefuse.plugin import FloorDiv, ModularIndexing, R, X

kernel_writer = pytest.importorskip("tilefuse_triton.kernel_writer")


def random_expr(rng: random.Random, depth: int = 0):
    if depth > 2 or rng.random() < 0.3:
        return rng.choice([X, R, sympy.Integer(rng.randint(0, 9))])
    kind = rng.choice(["add", "mul", "floordiv", "mod"])
    a = random_expr(rng, depth + 1)
    if kind == "add":
        return a + random_expr(rng, depth + 1)
    if kind == "mul":
        return a * rng.randint(1, 7)
    if kind == "floordiv":
        return FloorDiv(a, rng.randint(2, 9))
    return ModularIndexing(a, rng.randint(1, 5), rng.randint(2, 9))


@pytest.mark.parametrize("seed", range(40))
def test_printed_index_evaluates_like_sympy(seed):
    rng = random.Random(seed)
    expr = random_expr(rng)
    text = kernel_writer.print_index(expr)
    for _ in range(20):
        x, r = rng.randint(0, 500), rng.randint(0, 500)
        want = int(expr.subs({X: x, R: r}))
        assert eval(text, {"xindex": x, "rindex": r}) == want, text


def test_split_heads_index_simplifies_and_prints():
    e = FloorDiv(512 * FloorDiv(X, 512) + ModularIndexing(X, 1, 16), 2048)
    assert simplify_index(e, {X: 4096}) == FloorDiv(X, 2048)
    assert kernel_writer.print_index(e) == "((512*(xindex // 512) + (xindex % 16)) // 2048)"
