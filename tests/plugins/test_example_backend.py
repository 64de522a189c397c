"""The example third-party backend (examples/third_party_backend, ``acme``): C++ with OpenMP
for CPU tensors, forced with ``TILEFUSE_BACKENDS=acme``, checked against eager PyTorch.

Every case asserts that its graph compiled and that acme built its kernels, so a silent
fallback to eager (or Triton's interpreter taking the graph) fails the test.
"""

from __future__ import annotations

import ctypes
import logging

import pytest
import torch
import torch.nn.functional as F

from tests.compile_check import check, check_grad, kernel_count
from tilefuse import backend_selection, plugin
from tilefuse.discovery import reset_registry
from tilefuse.errors import Unsupported

pytest.importorskip(
    "tilefuse_acme", reason="install examples/third_party_backend (nox -s tests does)"
)
from tilefuse_acme import build as acme_build  # noqa: E402
from tilefuse_acme.descriptor import BACKEND as ACME  # noqa: E402

if not ACME.availability().ok:
    pytest.skip(ACME.availability().reason, allow_module_level=True)

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def kernel_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("acme-cache")


@pytest.fixture(autouse=True)
def forced_acme(monkeypatch, kernel_cache_dir):
    monkeypatch.setenv("TILEFUSE_BACKENDS", "acme")
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(kernel_cache_dir))
    monkeypatch.delenv("TILEFUSE_POLICY", raising=False)
    reset_registry()
    torch.manual_seed(0)
    yield
    reset_registry()


def check_acme(fn, *inputs, dtype=None, kernels=1):
    """``check`` (compiled equals eager, the graph compiled) plus: acme built the kernels."""
    reports = check(fn, *inputs, dtype=dtype)
    assert kernel_count(reports) >= kernels, [r.format() for r in reports]
    assert {k.backend for r in reports for k in r.kernels} == {"acme"}
    return reports


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


# -- ownership ---------------------------------------------------------------------


def test_acme_yields_cpu_to_triton_unless_forced(monkeypatch):
    info = ACME.info
    assert info.device_types == ("cpu",) and info.priority < 10  # Triton's is 10
    monkeypatch.delenv("TILEFUSE_BACKENDS")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reset_registry()
    names = [b.info.name for b in backend_selection.candidate_backends("cpu")]
    assert "acme" in names
    if "triton" in names:
        assert backend_selection.owner("cpu", plugin.CAP_POINTWISE).info.name == "triton"
    monkeypatch.setenv("TILEFUSE_BACKENDS", "acme")
    reset_registry()
    assert backend_selection.owner("cpu", plugin.CAP_REDUCTION).info.name == "acme"


def test_availability_names_the_missing_compiler(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    verdict = ACME.availability()
    assert not verdict.ok and "g++" in verdict.reason


# -- pointwise -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_pointwise_math(dtype):
    def fn(x, y):
        a = torch.exp(x) * torch.sigmoid(y) - torch.tanh(x) / (y.abs() + 1)
        b = torch.sqrt(x.abs()) + torch.log1p(y.abs()) + torch.erf(x) + torch.rsqrt(y.abs() + 1)
        c = torch.atan2(x, y) + torch.copysign(x, y) + torch.maximum(x, y) - torch.minimum(x, y)
        d = torch.where(x > y, x.floor(), y.round()) + x.sign() + torch.pow(x.abs(), 1.5)
        return a + b + c + d, torch.fmod(x, 0.75) + torch.remainder(y, 0.375), x // 0.5

    check_acme(fn, rand(7, 19, dtype=dtype), rand(7, 19, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8], ids=str)
def test_integer_ops(dtype):
    def fn(a, b):
        b = b.clamp(min=1)
        return (
            a // b, a % b, a * b - a, a & b, a | b, a ^ b, ~a, a.abs(), torch.maximum(a, b),
            a < b, (a == b) | (a > 3), a.to(torch.float32) / b,
        )  # fmt: skip

    low = 0 if dtype == torch.uint8 else -9
    a = torch.randint(low, 10, (5, 11), dtype=dtype)
    b = torch.randint(low, 10, (5, 11), dtype=dtype)
    check_acme(fn, a, b)


def test_bool_ops_and_type_promotion():
    def fn(a, b, x):
        return a & ~b, a ^ b, torch.logical_or(a, b), x + a, (x > 0).float() * 3 + b.int()

    a, b = torch.rand(6, 7) > 0.5, torch.rand(6, 7) > 0.5
    check_acme(fn, a, b, torch.randint(-5, 5, (6, 7), dtype=torch.int32))


def test_nan_and_inf_follow_torch():
    x = torch.tensor([1.0, float("nan"), -float("inf"), float("inf"), -0.0, 0.0, 2.5, -2.5])
    y = torch.tensor([float("nan"), 1.0, 3.0, -float("inf"), 0.0, -0.0, 0.5, -1.5])

    def fn(x, y):
        return (
            torch.maximum(x, y), torch.minimum(x, y), x.round(), x.sign(), x // y,
            torch.remainder(x, y), x.to(torch.bool), x.isnan() | x.isinf(), torch.signbit(x),
        )  # fmt: skip

    check_acme(fn, x, y)


def test_broadcast_constants_and_arange():
    def fn(x, b):
        i = torch.arange(x.shape[1], dtype=torch.float32)
        return (x + b) * 0.5 + i - 3, torch.triu(x, 1), torch.full_like(x, 2.0) ** x

    check_acme(fn, rand(9, 13), rand(13))


def test_non_contiguous_views_and_tiled_transpose():
    base = rand(20, 31)

    def fn(x, y):
        return x.t() + y.t() * 2, x[1:, 3:] - 1

    check_acme(fn, base, rand(20, 31))
    check_acme(lambda v: v * 3 + 1, base[2:, 1::2])  # storage offset and stride 2


# -- indirect and masked loads ---------------------------------------------------------


def test_indirect_loads():
    table, idx = rand(17, 8), torch.tensor([[0, 16, 3], [-1, 5, -16]])

    def fn(t, i, x):
        return F.embedding(i.abs(), t) * 2, t[i] + 1, torch.gather(x, 1, i.abs() % 5)

    check_acme(fn, table, idx, rand(2, 5))


def test_masked_loads_pad_and_cat():
    def fn(x, y):
        return F.pad(x, (2, 1, 0, 3), value=-1.5) + 1, torch.cat([x, y * 2], 1).exp()

    check_acme(fn, rand(4, 5), rand(4, 3))


# -- reductions ------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1, None], ids=str)
@pytest.mark.parametrize("shape", [(7, 13), (1, 5), (3, 4, 11)], ids=str)
def test_reductions_over_each_dim(shape, dim):
    def fn(x):
        if dim is None:
            return x.sum(), x.prod(), x.amax(), x.amin(), x.argmax(), (x > 1).any(), x.mean()
        return (
            x.sum(dim), x.prod(dim), x.amax(dim), x.amin(dim), x.argmax(dim), x.argmin(dim),
            (x > 1).any(dim), torch.logsumexp(x, dim), x.var(dim), x.mean(dim, keepdim=True),
        )  # fmt: skip

    check_acme(fn, rand(*shape))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_and_layer_norm(dtype):
    def fn(x, w, b):
        return torch.softmax(x, -1), F.layer_norm(x, (x.shape[-1],), w, b), F.log_softmax(x, 0)

    check_acme(fn, rand(6, 33, dtype=dtype), rand(33, dtype=dtype), rand(33, dtype=dtype),
               dtype=dtype)  # fmt: skip


def test_reductions_with_nan_ties_and_ints():
    x = torch.tensor([[1.0, 3.0, 3.0, float("nan"), 2.0], [-1.0, -1.0, -5.0, -5.0, 0.0]])
    n = torch.randint(-50, 50, (4, 9), dtype=torch.int64)

    def fn(x, n):
        return x.amax(1), x.argmax(1), x.argmin(1), n.sum(0), n.amax(1), n.argmin(1), n.prod(1)

    check_acme(fn, x, n)


def test_zero_size_and_long_rows():
    check_acme(lambda x: x.sum(1) + 1, rand(0, 7))
    check_acme(lambda x: (x * 2).sum(0), rand(4100, 3))


def test_training_step_forward_and_backward():
    def fn(x, w):
        h = torch.tanh(x * w).sum(-1)
        return torch.softmax(h, 0)

    reports = check_grad(fn, rand(8, 16).requires_grad_(), rand(16).requires_grad_())
    assert {k.backend for r in reports for k in r.kernels} == {"acme"}


# -- what acme does not do -------------------------------------------------------------


def test_a_spec_acme_cannot_render_runs_eagerly_with_one_warning(monkeypatch, caplog):
    import tilefuse

    def refuse(spec):
        raise Unsupported("acme: refused for this test")

    monkeypatch.setattr("tilefuse_acme.scheduling.render", refuse)
    torch._dynamo.reset()
    tilefuse.reset()
    x = rand(5, 6)
    fn = torch.compile(lambda v: (v * 2).sum(1), backend="tilefuse")
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out = fn(x)
        fn(x)
    torch.testing.assert_close(out, (x * 2).sum(1))
    warnings = [r for r in caplog.records if "refused for this test" in r.getMessage()]
    assert len(warnings) == 1
    assert tilefuse.stats()["graphs_fallen_back"] >= 1


def test_symbolic_sizes_are_declined():
    import sympy
    from tilefuse_acme.render import render

    spec = plugin.KernelSpec("k", plugin.GroupKind.POINTWISE, "cpu", sympy.Symbol("s0"),
                             sympy.Integer(1), (), (), {})  # fmt: skip
    with pytest.raises(Unsupported, match="static sizes"):
        render(spec)


# -- the build cache ---------------------------------------------------------------------


def test_library_is_cached_and_a_tampered_one_is_rebuilt():
    source = 'extern "C" int acme_probe() { return 7; }\n'
    first = acme_build.build_library(source)
    assert acme_build.build_library(source) == first
    first.write_bytes(b"not a shared object")
    again = acme_build.build_library(source)
    assert again == first and again.read_bytes() != b"not a shared object"
    assert ctypes.CDLL(str(again)).acme_probe() == 7
    assert acme_build.build_library(source, salt="policy=other") != first


# -- the conformance kit ------------------------------------------------------------------


def test_passes_tilefuse_conformance(capsys):
    from tilefuse import cli

    code = cli.main(["conformance", "acme"])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert code == 0, out
    assert last.endswith("passed, 0 failed"), out
    assert int(last.split()[0]) >= 90, out  # API checks and differential cases all ran
