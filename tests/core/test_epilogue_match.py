"""The GEMM epilogue matcher, on lowered IR: every match computes what eager computes.

Expressions over ``y = a @ b`` (and a bias or residual operand) are traced with
``make_fx``, lowered and scheduled with a scheduling that accepts every fusion;
no kernel is built. For each expression the matcher either refuses the epilogue
(with a reason), or the steps it matched, applied by ``Epilogue.apply_reference``
(the definition every template renders), equal the eager expression.
"""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from tilefuse import plugin
from tilefuse.frontend import lowerings  # noqa: F401  (registers every lowering)
from tilefuse.frontend.decompositions import decomposition_table
from tilefuse.frontend.lowering import GraphLowering
from tilefuse.scheduler.epilogue import NotAnEpilogue, match_tree
from tilefuse.scheduler.fusion import TemplateStep
from tilefuse.scheduler.schedule import schedule_graph

M, K, N = 16, 24, 8
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SQRT_HALF = 1.0 / math.sqrt(2.0)

# -- expressions: nested tuples, evaluated by torch eagerly and under make_fx -----------------
# Leaves: ("y",) the GEMM result, ("bias",) [N], ("bias_m",) [M, 1], ("res",) [M, N],
# ("c", value). Nodes: (op, *args) for the ops in _UNARY and _BINARY, ("pow", x, n),
# ("gelu", x, approximate).
Y = ("y",)
_UNARY = {
    "tanh": torch.tanh,
    "erf": torch.erf,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "clamp0": lambda v: torch.clamp_min(v, 0.0),
    "neg": lambda v: -v,
    "silu": torch.nn.functional.silu,
}
_UNARY_FLOAT = {  # the same ops on Python floats: traced code folds constants in Python
    "tanh": math.tanh,
    "erf": math.erf,
    "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
    "relu": lambda v: max(v, 0.0),
    "clamp0": lambda v: max(v, 0.0),
    "neg": lambda v: -v,
    "silu": lambda v: v / (1.0 + math.exp(-v)),
}


def _extreme(tensor_op, clamp_op, float_op):
    """torch.maximum/minimum where either side may be a Python float (then a clamp)."""

    def apply(p, q):
        if not isinstance(p, torch.Tensor):
            p, q = q, p
        if not isinstance(p, torch.Tensor):
            return float_op(p, q)
        return tensor_op(p, q) if isinstance(q, torch.Tensor) else clamp_op(p, q)

    return apply


_BINARY = {
    "add": lambda p, q: p + q,
    "sub": lambda p, q: p - q,
    "mul": lambda p, q: p * q,
    "div": lambda p, q: p / q,
    "max": _extreme(torch.maximum, torch.clamp_min, max),
    "min": _extreme(torch.minimum, torch.clamp_max, min),
}
CONSTANTS = (0.5, 1.0, 2.0, -1.0, 3.0, 0.0, 0.044715, 0.0447, SQRT_2_OVER_PI, 0.7978,
             SQRT_HALF, 0.7071, math.sqrt(2.0), 1.0 / 3.0)  # fmt: skip


def evaluate(e: tuple, env: dict[str, torch.Tensor]):
    """Eager value of ``e``; every use of a subexpression computes it again (as written)."""
    op = e[0]
    if op == "c":
        return e[1]
    if op in env:
        return env[op]
    if op in _UNARY:
        v = evaluate(e[1], env)
        return _UNARY[op](v) if isinstance(v, torch.Tensor) else _UNARY_FLOAT[op](v)
    if op in _BINARY:
        return _BINARY[op](evaluate(e[1], env), evaluate(e[2], env))
    if op == "pow":
        return evaluate(e[1], env) ** e[2]
    if op == "gelu":
        v = evaluate(e[1], env)
        return torch.nn.functional.gelu(v, approximate=e[2])
    raise AssertionError(f"unknown expression node {op}")


def size(e: tuple) -> int:
    return 1 + sum(size(a) for a in e[1:] if isinstance(a, tuple))


def leaves(e: tuple) -> set[str]:
    if e[0] in ("y", "bias", "bias_m", "res"):
        return {e[0]}
    out: set[str] = set()
    for a in e[1:]:
        if isinstance(a, tuple):
            out |= leaves(a)
    return out


def show(e: tuple) -> str:
    op = e[0]
    if op == "c":
        return f"{e[1]:g}"
    if op in ("y", "bias", "bias_m", "res"):
        return op
    if op in _BINARY:
        if op in ("max", "min"):
            return f"{op}({show(e[1])}, {show(e[2])})"
        sign = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
        return f"({show(e[1])} {sign} {show(e[2])})"
    if op == "pow":
        return f"{show(e[1])}**{e[2]}"
    if op == "gelu":
        return f"gelu({show(e[1])}, {e[2]})"
    return f"{op}({show(e[1])})"


def c(v: float) -> tuple:
    return ("c", v)


def _gelu_tanh_form(x: tuple, cube: tuple, swap: bool = False, k: float = 0.044715) -> tuple:
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + k * cube))), as GPT-2 writes it, or reordered."""
    inner = ("add", x, ("mul", c(k), cube))
    t = ("tanh", ("mul", inner, c(SQRT_2_OVER_PI)) if swap else ("mul", c(SQRT_2_OVER_PI), inner))
    if swap:
        return ("mul", x, ("mul", c(0.5), ("add", t, c(1.0))))
    return ("mul", ("mul", c(0.5), x), ("add", c(1.0), t))


# Each known epilogue step around ``x``, in the forms people write it.
def _known_forms(x: tuple) -> dict[str, list[tuple]]:
    return {
        "bias": [("add", x, ("bias",)), ("add", ("bias",), x), ("add", x, ("bias_m",))],
        "residual": [("add", x, ("res",)), ("add", ("res",), x)],
        "scale": [("mul", x, c(0.5)), ("mul", c(-3.0), x), ("div", x, c(4.0))],
        "relu": [("relu", x), ("clamp0", x)],
        "sigmoid": [("sigmoid", x)],
        "tanh": [("tanh", x)],
        "silu": [("silu", x), ("mul", x, ("sigmoid", x)), ("mul", ("sigmoid", x), x)],
        "gelu_erf": [
            ("gelu", x, "none"),
            ("mul", ("mul", x, c(0.5)), ("add", c(1.0), ("erf", ("mul", x, c(SQRT_HALF))))),
            ("mul", ("mul", c(0.5), x), ("add", ("erf", ("div", x, c(math.sqrt(2.0)))), c(1.0))),
        ],
        "gelu_tanh": [
            ("gelu", x, "tanh"),
            _gelu_tanh_form(x, cube=("pow", x, 3)),
            _gelu_tanh_form(x, cube=("mul", ("mul", x, x), x), swap=True),
        ],
    }  # fmt: skip


def _paths(e: tuple, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    for i, a in enumerate(e[1:], start=1):
        if isinstance(a, tuple):
            out += _paths(a, prefix + (i,))
    return out


def _replace(e: tuple, path: tuple, new: tuple) -> tuple:
    if not path:
        return new
    i = path[0]
    return e[:i] + (_replace(e[i], path[1:], new),) + e[i + 1 :]


def _get(e: tuple, path: tuple) -> tuple:
    for i in path:
        e = e[i]
    return e


def _near_forms(x: tuple) -> list[tuple]:
    """Each known step around ``x`` with one precise defect: what a matcher must not accept
    as that step (some are another chain of steps, which the property then checks)."""
    half_x = ("mul", x, c(0.5))
    cube = ("pow", x, 3)
    cubic = ("add", x, ("mul", c(0.044715), cube))
    return [
        ("mul", half_x, ("add", c(1.0), ("tanh", x))),  # the reported gelu_tanh look-alike
        ("mul", half_x, ("add", c(1.0), ("erf", x))),
        ("mul", half_x, ("add", c(1.0), ("erf", ("neg", x)))),  # raised IndexError
        ("mul", half_x, ("add", c(1.0), ("erf", ("add", ("mul", x, c(SQRT_HALF)), c(1.0))))),
        ("mul", half_x, ("add", c(1.0), ("erf", ("mul", x, c(0.7))))),
        ("mul", half_x, ("add", c(2.0), ("erf", ("mul", x, c(SQRT_HALF))))),
        ("mul", half_x, ("sub", c(1.0), ("erf", ("mul", x, c(SQRT_HALF))))),
        ("mul", x, ("add", c(1.0), ("erf", ("mul", x, c(SQRT_HALF))))),
        ("mul", ("mul", Y, c(0.5)), ("add", c(1.0), ("erf", ("mul", x, c(SQRT_HALF))))),
        ("mul", ("mul", ("bias",), c(0.5)), ("add", c(1.0), ("erf", ("mul", x, c(SQRT_HALF))))),
        _gelu_tanh_form(x, cube, k=0.0447),
        _gelu_tanh_form(x, ("pow", x, 2)),
        _gelu_tanh_form(x, ("mul", ("mul", x, x), Y)),
        _gelu_tanh_form(x, cube, swap=True, k=-0.044715),
        ("mul", half_x, ("add", c(1.0), ("tanh", cubic))),  # no sqrt(2 / pi)
        ("mul", half_x, ("add", c(1.0), ("erf", ("mul", c(SQRT_2_OVER_PI), cubic)))),
        ("mul", x, ("sigmoid", Y)),
        ("mul", x, ("sigmoid", ("add", x, c(1.0)))),
        ("mul", x, ("tanh", x)),
        ("mul", ("sigmoid", x), ("sigmoid", x)),
        ("max", x, c(1.0)),
        ("min", x, c(0.0)),
        ("max", x, ("bias",)),
        ("sub", x, ("bias",)),
        ("sub", ("bias",), x),
        ("add", x, ("mul", ("bias",), c(2.0))),
        ("add", ("add", x, ("bias",)), c(1.0)),
        ("mul", x, ("res",)),
        ("add", x, x),
        ("add", x, Y) if x != Y else ("add", x, ("relu", Y)),
    ]  # fmt: skip


@st.composite
def _mutated(draw, e: tuple, x: tuple) -> tuple:
    """``e`` with one node changed: a near miss of the form it was."""
    path = draw(st.sampled_from(_paths(e)))
    node = _get(e, path)
    const = c(draw(st.sampled_from(CONSTANTS)))
    choices = [x, x, Y, ("bias",), const, ("add", node, c(1.0)), ("mul", node, c(2.0))]
    if node[0] in _UNARY:
        choices.append((draw(st.sampled_from(sorted(_UNARY))), node[1]))
    if node[0] in _BINARY:
        choices.append((draw(st.sampled_from(sorted(_BINARY))), node[1], node[2]))
        choices.append((node[0], node[2], node[1]))
        choices += [node[1], node[2]]
    if node[0] == "pow":
        choices.append(("pow", node[1], draw(st.sampled_from([2, 4]))))
    return _replace(e, path, draw(st.sampled_from(choices)))


@st.composite
def _random_op(draw, x: tuple) -> tuple:
    drawn = c(draw(st.floats(-3.0, 3.0, allow_subnormal=False)))
    leaves = [x, Y, ("bias",), ("res",), ("bias_m",), c(0.5), c(1.0), c(2.0), drawn]
    other = draw(st.sampled_from(leaves))
    kind = draw(st.sampled_from(["unary", "binary", "pow"]))
    if kind == "unary":
        return (draw(st.sampled_from(sorted(_UNARY))), x)
    if kind == "pow":
        return ("pow", x, draw(st.sampled_from([2, 3])))
    op = draw(st.sampled_from(sorted(_BINARY)))
    if op == "div" and (other[0] != "c" or other[1] == 0.0):
        other = c(2.0)
    return (op, x, other) if draw(st.booleans()) else (op, other, x)


@st.composite
def expressions(draw) -> tuple:
    """A chain of up to three steps over ``y``: known steps, near misses and random ops."""
    e = Y
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["known", "known", "near", "near", "mutated", "random"]))
        if what == "random":
            nxt = draw(_random_op(e))
        elif what == "near":
            nxt = draw(st.sampled_from(_near_forms(e)))
        else:
            kind = draw(st.sampled_from(sorted(_known_forms(e))))
            nxt = draw(st.sampled_from(_known_forms(e)[kind]))
            if what == "mutated":
                nxt = draw(_mutated(nxt, e))
        if size(nxt) > 48:  # keep the body small enough to stay one inlined node
            break
        e = nxt
    return e


# -- lowering and checking ------------------------------------------------------------------
def _accept_all(*args):
    """Both answers at once: every kernel fusion (``can_fuse``) and every epilogue
    (``accepts_epilogue``) is accepted."""
    return plugin.Verdict.yes()


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(M, K, generator=g) * 0.3,
        "b": torch.randn(K, N, generator=g) * 0.3,
        "bias": torch.randn(N, generator=g),
        "bias_m": torch.randn(M, 1, generator=g),
        "res": torch.randn(M, N, generator=g),
    }


def match(e: tuple, data: dict[str, torch.Tensor] | None = None):
    """``(template step, refusal reasons, eager value, inputs by graph buffer name, y)``."""
    data = data or _inputs()
    names = ["a", "b", "bias", "bias_m", "res"]

    def fn(a, b, bias, bias_m, res):
        return evaluate(e, {"y": a @ b, "bias": bias, "bias_m": bias_m, "res": res})

    args = [data[n] for n in names]
    gm = make_fx(fn, decomposition_table=decomposition_table())(*args)
    graph = GraphLowering(gm, args).run()
    schedule = schedule_graph(graph, _accept_all, accepts_epilogue=_accept_all)
    templates = [s for s in schedule.steps if isinstance(s, TemplateStep)]
    assert len(templates) == 1, schedule.steps
    by_buffer = {b.name: t for b, t in zip(graph.inputs, args) if b is not None}
    out_names = [o.name for o in graph.outputs]
    eager = fn(*args)
    y = data["a"] @ data["b"]
    return templates[0], [str(r) for r in schedule.refusals], eager, by_buffer, y, out_names


def check_expression(e: tuple) -> tuple | None:
    """Assert the property for ``e``; returns the matched steps, or None when refused."""
    step, refusals, eager, by_buffer, y, out_names = match(e)
    if step.epilogue is None:
        if step.node.name not in out_names:  # a consumer exists: its refusal is recorded
            assert any(r.startswith("epilogue:") for r in refusals), refusals
        return None
    matched = step.epilogue
    # The matched node must be the whole expression, so eager's value is its value.
    assert matched.node.name in out_names, (show(e), matched.node.name, out_names)
    operands = [
        torch.as_strided(by_buffer[o.buffer], o.shape, o.stride, o.offset) for o in matched.operands
    ]
    specs = tuple(plugin.TensorSpec.of(t) for t in operands)
    epilogue = plugin.Epilogue(matched.steps, specs, "float32")
    got = epilogue.apply_reference(y, operands)
    torch.testing.assert_close(
        got, eager, rtol=1e-4, atol=1e-4, equal_nan=True,
        msg=lambda m: f"{show(e)} matched as {matched.steps}: {m}",
    )  # fmt: skip
    return matched.steps


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(expressions())
def test_every_match_equals_eager(e):
    assume("y" in leaves(e))
    check_expression(e)


# -- the reported cases and the known forms, explicitly -------------------------------------
def kinds(steps) -> list[str]:
    return [s.kind for s in steps]


def test_tanh_without_the_cubic_is_not_gelu_tanh():
    """Reported: ``y * 0.5 * (1 + tanh(y))`` was matched as gelu_tanh."""
    e = ("mul", ("mul", Y, c(0.5)), ("add", c(1.0), ("tanh", Y)))
    assert check_expression(e) is None
    step, refusals, *_ = match(e)
    assert any("no epilogue step computes" in r for r in refusals), refusals


def test_near_misses_of_gelu_erf_do_not_raise():
    """Reported: ``y * 0.5 * (1 + erf(-y))`` raised IndexError in the matcher, and the whole
    graph went to eager. It is refused, or matched exactly: it equals
    ``-gelu_erf(-sqrt(2) * y) / sqrt(2)``, which the matcher finds and the check verifies."""
    half_y = ("mul", Y, c(0.5))
    erf_of_neg = ("mul", half_y, ("add", c(1.0), ("erf", ("neg", Y))))
    assert kinds(check_expression(erf_of_neg)) == ["mul_scalar", "gelu_erf", "mul_scalar"]
    shifted = ("mul", half_y, ("add", c(1.0), ("erf", ("add", ("mul", Y, c(SQRT_HALF)), c(1.0)))))
    assert check_expression(shifted) is None
    other_factor = ("mul", ("mul", ("bias",), c(0.5)), ("add", c(1.0), ("erf", Y)))
    assert check_expression(other_factor) is None


@pytest.mark.parametrize(
    "kind", ["bias", "residual", "scale", "relu", "sigmoid", "tanh", "silu", "gelu_erf",
             "gelu_tanh"],
)  # fmt: skip
def test_every_known_form_is_matched(kind):
    expected = {"bias": ["add_bias_n"], "residual": ["add_matrix"], "scale": ["mul_scalar"]}
    for i, e in enumerate(_known_forms(Y)[kind]):
        steps = check_expression(e)
        assert steps is not None, f"{show(e)} was refused"
        if kind == "bias" and i == 2:
            assert kinds(steps) == ["add_bias_m"]
        else:
            assert kinds(steps) == expected.get(kind, [kind]), show(e)


def test_chains_of_known_steps_are_matched():
    x = ("add", Y, ("bias",))
    e = ("add", ("mul", ("gelu", x, "tanh"), c(2.0)), ("res",))
    assert kinds(check_expression(e)) == ["add_bias_n", "gelu_tanh", "mul_scalar", "add_matrix"]
    e = ("mul", c(3.0), ("silu", ("mul", Y, c(2.0))))  # the 3 folds into silu's product
    assert kinds(check_expression(e)) == ["mul_scalar", "silu", "mul_scalar"]
    e = ("mul", Y, ("sigmoid", ("mul", Y, c(2.0))))  # y * sigmoid(2y) == silu(2y) / 2
    assert kinds(check_expression(e)) == ["mul_scalar", "silu", "mul_scalar"]


@pytest.mark.parametrize(
    "e",
    [
        ("sub", Y, ("bias",)),  # no step subtracts
        ("add", Y, c(1.0)),  # no step adds a scalar
        ("add", Y, Y),
        ("mul", Y, ("bias",)),
        ("mul", Y, ("sigmoid", ("add", Y, ("bias",)))),  # x * sigmoid(x + b) is not silu
        ("gelu", ("pow", Y, 2), "tanh"),  # x**2 is no step
        _gelu_tanh_form(Y, ("pow", Y, 3), k=0.0447),  # 0.0447, not 0.044715
        _gelu_tanh_form(Y, ("pow", Y, 2)),
        _gelu_tanh_form(Y, ("mul", ("mul", Y, Y), ("add", Y, ("bias",)))),
    ],
)  # fmt: skip
def test_near_misses_are_refused(e):
    assert check_expression(e) is None


@pytest.mark.parametrize("accepted", [True, False])
def test_the_epilogue_question_is_asked_once_with_the_matched_epilogue(accepted):
    data = _inputs()
    asked = []

    def answer(op, inputs, layout, epilogue):
        asked.append((op, [s.kind for s in epilogue.steps], len(inputs), layout.shape))
        return plugin.Verdict.yes() if accepted else plugin.Verdict.no("the provider is tired")

    def fn(a, b, bias):
        return torch.relu(a @ b + bias)

    args = [data["a"], data["b"], data["bias"]]
    gm = make_fx(fn, decomposition_table=decomposition_table())(*args)
    graph = GraphLowering(gm, args).run()
    schedule = schedule_graph(graph, _accept_all, accepts_epilogue=answer)
    (step,) = [s for s in schedule.steps if isinstance(s, TemplateStep)]
    assert asked == [("mm", ["add_bias_n", "relu"], 3, (M, N))]
    refused = [str(r) for r in schedule.refusals if r.kind == "epilogue"]
    if accepted:
        assert step.epilogue is not None and refused == []
    else:
        assert step.epilogue is None
        assert any("no template provider accepts it: the provider is tired" in r for r in refused)


def test_without_an_epilogue_question_nothing_is_fused_into_a_template():
    data = _inputs()
    args = [data["a"], data["b"]]
    gm = make_fx(lambda a, b: torch.relu(a @ b), decomposition_table=decomposition_table())(*args)
    schedule = schedule_graph(GraphLowering(gm, args).run(), _accept_all)
    (step,) = [s for s in schedule.steps if isinstance(s, TemplateStep)]
    assert step.epilogue is None
    assert any("no template selector was asked" in str(r) for r in schedule.refusals)


def test_integer_cast_is_refused():
    data = _inputs()

    def fn(a, b):
        return (a @ b * 10).to(torch.int32)

    gm = make_fx(fn, decomposition_table=decomposition_table())(data["a"], data["b"])
    graph = GraphLowering(gm, [data["a"], data["b"]]).run()
    schedule = schedule_graph(graph, _accept_all, accepts_epilogue=_accept_all)
    (step,) = [s for s in schedule.steps if isinstance(s, TemplateStep)]
    assert step.epilogue is None
    assert any("a cast to torch.int32" in str(r) for r in schedule.refusals)


@pytest.mark.parametrize(
    "tree",
    [
        (),
        ("add",),
        ("maximum", ("load", "buf0", 0)),
        ("mul", 3, ("load", "buf0", 0)),
        ("no_such_op", ("load", "buf0", 0)),
        ("load", "buf0", 7),  # the GEMM result at another element
        ("tanh",) * 1 + (("tanh",) * 1,),
    ],
)
def test_malformed_trees_are_refused_not_raised(tree):
    with pytest.raises(NotAnEpilogue):
        match_tree(tree, "buf0", 0, [], (2, 2))


def test_deep_tree_is_refused_not_raised():
    tree = ("load", "buf0", 0)
    for _ in range(5000):
        tree = ("tanh", tree)
    with pytest.raises(NotAnEpilogue, match="deeper"):
        match_tree(tree, "buf0", 0, [], (2, 2))


def test_dense_orders_are_proved_for_symbolic_strides():
    from tilefuse.scheduler.epilogue import _dense_order

    s, t = sympy.Symbol("s0", positive=True), sympy.Symbol("s1", positive=True)
    assert _dense_order((2, s, 24), (24 * s, 24, 1)) == [0, 1, 2]
    # q/k/v heads permuted out of a fused projection: (3, batch, heads, seq, dim)
    sizes = (3, t, 4, s, 8)
    strides = (32, 96 * s, 8, 96, 1)  # stored as (batch, seq, 3, heads, dim)
    assert _dense_order(sizes, strides) == [1, 3, 0, 2, 4]
    assert _dense_order((s, 24), (48, 1)) is None  # a gap: every other row
    assert _dense_order((s, 24), (24, 0)) is None  # a broadcast is no dense layout
    assert _dense_order((1, s, 24), (7, 24, 1)) == [1, 2]  # a size-1 dim has no order
