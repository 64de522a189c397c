"""A scheduling policy's answers are checked in core before any backend acts on them.

Unit tests of ``tilefuse.policy_check`` and end-to-end compiles (against eager) with
policies that answer wrongly: the answer is refused with one warning naming the policy,
the backend's own choice runs, and the graph still compiles.
"""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest
import torch

import tilefuse
from tests.compile_check import assert_same, kernel_count
from tests.core.fake_dists import make_dist, source_for
from tilefuse import backend_selection, plugin
from tilefuse.discovery import _installed_entry_points, reset_registry
from tilefuse.errors import PluginError
from tilefuse.policy_check import CheckedPolicy, InvalidAnswer, check_ranking, check_tiling

# What check_tiling reads of the KernelSpec a policy was asked about.
POINTWISE = SimpleNamespace(kind=plugin.GroupKind.POINTWISE, rnumel=1, xnumel=1000)
TILED = SimpleNamespace(kind=plugin.GroupKind.POINTWISE_2D, rnumel=64, xnumel=64)
ROWS_100 = SimpleNamespace(kind=plugin.GroupKind.REDUCTION, rnumel=100, xnumel=4)


@pytest.mark.parametrize(
    "answer, group, says",
    [
        ({"XBLOCK": 3}, POINTWISE, "XBLOCK=3 must be a power of two from 1 to 1048576"),
        ({"XBLOCK": 0}, POINTWISE, "XBLOCK=0 must be a power of two"),
        ({"XBLOCK": -64}, POINTWISE, "XBLOCK=-64 must be a power of two"),
        ({"XBLOCK": 64.0}, POINTWISE, "XBLOCK=64.0 must be an int"),
        ({"XBLOCK": "64"}, POINTWISE, "XBLOCK='64' must be an int"),
        ({"XBLOCK": True}, POINTWISE, "XBLOCK=True must be an int"),
        ({"XBLOCK": 2**21}, POINTWISE, "XBLOCK=2097152 must be a power of two from 1"),
        ({"XBLOCK": 2048, "RBLOCK": 1024}, TILED, "XBLOCK * RBLOCK = 2097152 exceeds"),
        ({"num_warps": 64}, POINTWISE, "num_warps=64 must be a power of two from 1 to 32"),
        ({"num_warps": 6}, POINTWISE, "num_warps=6 must be a power of two"),
        ({"xblock": 64}, POINTWISE, "unknown tiling key 'xblock'; known keys: XBLOCK, RBLOCK"),
        ({"int64": False}, ROWS_100, "unknown tiling key 'int64'"),
        ({"RBLOCK": 64}, POINTWISE, "RBLOCK=64 on a one-dimensional pointwise group"),
        ({"persistent": False}, TILED, "persistent applies to reductions only"),
        ({"RBLOCK": 64}, ROWS_100, "RBLOCK=64 does not cover the row of 100 elements"),
        ({"RBLOCK": 64, "persistent": True}, ROWS_100, "use RBLOCK >= 128"),
        ({"persistent": True}, ROWS_100, "persistent=True needs an RBLOCK that covers"),
        ({"persistent": 0}, ROWS_100, "persistent=0 must be True or False"),
        ([("XBLOCK", 64)], POINTWISE, "tiling() returned [('XBLOCK', 64)]; expected a dict"),
    ],
)
def test_invalid_tiling_is_refused_with_what_was_wrong(answer, group, says):
    with pytest.raises(InvalidAnswer) as info:
        check_tiling(answer, group)
    assert says in str(info.value)


@pytest.mark.parametrize(
    "answer, group, expected",
    [
        (None, POINTWISE, None),
        ({}, POINTWISE, None),
        ({"XBLOCK": 512, "num_warps": 4}, POINTWISE, {"XBLOCK": 512, "num_warps": 4}),
        ({"RBLOCK": 1}, POINTWISE, {"RBLOCK": 1}),
        ({"XBLOCK": 32, "RBLOCK": 16}, TILED, {"XBLOCK": 32, "RBLOCK": 16}),
        ({"RBLOCK": 128}, ROWS_100, {"RBLOCK": 128}),
        ({"RBLOCK": 16, "persistent": False}, ROWS_100, {"RBLOCK": 16, "persistent": False}),
        ({"XBLOCK": 2, "num_warps": 1}, ROWS_100, {"XBLOCK": 2, "num_warps": 1}),
    ],
)
def test_valid_tiling_is_passed_on_as_a_copy(answer, group, expected):
    got = check_tiling(answer, group)
    assert got == expected and (got is None or got is not answer)


def _candidates():
    return [plugin.FusionCandidate("vertical", object(), object(), s) for s in (3, 2, 1)]


def test_ranking_may_reorder_and_veto_given_candidates():
    a, b, c = cands = _candidates()
    assert check_ranking([c, a], cands) == [c, a]
    assert check_ranking((), cands) == []


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda cs: None, "rank_fusions() returned None; expected a list"),
        (lambda cs: iter(cs), "expected a list"),
        (lambda cs: [cs[0], cs[0]], "twice"),
        (lambda cs: [*cs, "extra"], "returned 'extra', which is not one of the candidates"),
        (lambda cs: [plugin.FusionCandidate("vertical", cs[0].first, cs[0].second, 3)],
         "which is not one of the candidates"),
    ],
)  # fmt: skip
def test_junk_ranking_is_refused(make, says):
    cands = _candidates()
    with pytest.raises(InvalidAnswer, match=says.replace("(", "\\(").replace(")", "\\)")):
        check_ranking(make(cands), cands)


class _Policy:
    name = "junk-policy"
    api_version = plugin.API_VERSION

    def __init__(self, ranking, tiling):
        self._ranking = ranking
        self._tiling = tiling

    def uuid(self):
        return "junk-1"

    def rank_fusions(self, candidates):
        return self._ranking(candidates)

    def tiling(self, group, device):
        return self._tiling(group)


def _raise(*_):
    raise RuntimeError("policy bug")


def test_checked_policy_falls_back_and_warns_once_naming_the_policy(monkeypatch, caplog):
    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    policy = CheckedPolicy.wrap(_Policy(lambda cs: "all", lambda g: {"XBLOCK": 3}), "acme 1.0")
    cands = _candidates()
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        for _ in range(3):
            assert policy.rank_fusions(cands) == cands
            assert policy.tiling(POINTWISE, "cpu") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "scheduling policy 'junk-policy' from acme 1.0: refused its rank_fusions()" in lines[0]
    assert "keeping the scheduler's own order" in lines[0]
    assert "refused its tiling() answer" in lines[1] and "XBLOCK=3 must be" in lines[1]
    assert "using the backend's own tiling" in lines[1]
    raising = CheckedPolicy.wrap(_Policy(_raise, _raise))
    assert raising.rank_fusions(cands) == cands and raising.tiling(ROWS_100, "cpu") is None
    assert "rank_fusions() raised RuntimeError: policy bug" in caplog.text
    assert "tiling() raised RuntimeError: policy bug" in caplog.text


def test_checked_policy_raises_under_strict(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    policy = CheckedPolicy.wrap(_Policy(lambda cs: cs, lambda g: {"RBLOCK": 64}))
    with pytest.raises(PluginError, match="junk-policy.*RBLOCK=64 does not cover the row"):
        policy.tiling(ROWS_100, "cpu")


# -- end to end: a policy plugin installed next to the real backends ----------------------

TILING_POLICY = """
from tilefuse import plugin

class Policy:
    name = "tiles"
    api_version = plugin.API_VERSION
    answer = None
    asked = 0
    seen = []
    def uuid(self):
        return "tiles-1"
    def rank_fusions(self, candidates):
        return candidates
    def tiling(self, spec, device):
        Policy.asked += 1
        Policy.seen.append((spec, device))
        return Policy.answer

POLICY = Policy()
"""


@pytest.fixture
def tiling_policy(tmp_path, monkeypatch):
    """Installs policy ``tiles`` (its ``tiling`` answers ``Policy.answer``) and activates it."""
    pytest.importorskip("tilefuse_triton", reason="needs the Triton backend")
    sys.modules.pop("acme_tiles", None)
    make_dist(tmp_path, "acme-tiles", {plugin.SCHEDULING_GROUP: {"tiles": "acme_tiles:POLICY"}},
              {"acme_tiles": TILING_POLICY})  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = source_for(tmp_path)
    reset_registry(lambda group: [*_installed_entry_points(group), *fake(group)])
    monkeypatch.setenv("TILEFUSE_POLICY", "tiles")
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    policy = backend_selection.active_policy()
    yield type(policy.wrapped)
    reset_registry()
    sys.modules.pop("acme_tiles", None)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _compile_and_compare(fn, *inputs):
    """Compile (not strict: a refused answer must not fail the compile) and compare."""
    from tilefuse.report import collect_reports

    torch._dynamo.reset()
    tilefuse.reset()
    with collect_reports() as reports:
        actual = torch.compile(fn, backend="tilefuse")(*inputs)
    assert_same(actual, fn(*inputs))
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0, stats
    return reports


@pytest.mark.parametrize(
    "answer, says",
    [
        ({"RBLOCK": 16}, "RBLOCK=16 does not cover the row of 100 elements"),
        ({"XBLOCK": 3}, "XBLOCK=3 must be a power of two"),
    ],
)
def test_bad_tiling_is_refused_and_the_sum_is_still_right(tiling_policy, caplog, answer, says):
    tiling_policy.answer = answer
    x = torch.randn(4, 100, device=_device())
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        reports = _compile_and_compare(lambda t: t.sum(-1), x)
    assert kernel_count(reports) == 1 and tiling_policy.asked >= 1
    assert "scheduling policy 'tiles' from acme-tiles 1.0: refused its tiling()" in caplog.text
    assert says in caplog.text


def test_tiling_receives_the_kernel_spec_about_to_be_rendered(tiling_policy):
    x = torch.randn(4, 100, device=_device())
    reports = _compile_and_compare(lambda t: (t * 2).sum(-1), x)
    (kernel,) = reports[0].kernels
    ((spec, device),) = tiling_policy.seen
    assert isinstance(spec, plugin.KernelSpec) and device == str(x.device)
    assert spec.name == kernel.name and spec.kind is plugin.GroupKind.REDUCTION
    assert (spec.xnumel, spec.rnumel) == (4, 100)
    (reduced,) = [m for m in spec.members if m.level is plugin.Level.REDUCED]
    assert reduced.reduction_type == "sum" and spec.stores == (reduced.name,)
    (read,) = {name for m in spec.members for name, _ in m.reads} - set(spec.names)
    assert spec.buffers[read].dtype == x.dtype and spec.buffers[read].size == (4, 100)


def test_valid_tiling_is_applied(tiling_policy):
    tiling_policy.answer = {"RBLOCK": 16, "persistent": False}
    x = torch.randn(4, 100, device=_device())
    reports = _compile_and_compare(lambda t: t.sum(-1), x)
    (kernel,) = reports[0].kernels
    assert "for roffset in range(0, rnumel, RBLOCK)" in kernel.source  # the looped reduction


@pytest.mark.parametrize("answer", [{"XBLOCK": 32}, {"RBLOCK": 16}, {"XBLOCK": 16, "RBLOCK": 16}])
def test_valid_tile_sizes_on_a_transposed_add_stay_correct(tiling_policy, answer):
    tiling_policy.answer = answer
    reports = _compile_and_compare(lambda s: s * 2 + s.t(), torch.randn(64, 64, device=_device()))
    assert kernel_count(reports) == 1 and tiling_policy.asked >= 1


def test_tiling_too_large_with_the_backends_other_block_is_not_applied(
    tiling_policy, monkeypatch, caplog
):
    """An answer valid on its own that, merged with the backend's own RBLOCK for the row,
    exceeds Triton's block limit keeps the backend's tiling (the limit is lowered here so
    that a small row shows the rule)."""
    from tilefuse_triton import scheduling

    monkeypatch.setattr(scheduling, "MAX_BLOCK_ELEMENTS", 1024)
    tiling_policy.answer = {"XBLOCK": 64}
    x = torch.randn(4, 100, device=_device())
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        reports = _compile_and_compare(lambda t: t.sum(-1), x)
    assert kernel_count(reports) == 1 and "exceeds Triton's 1024 elements" in caplog.text
