"""``tilefuse conformance NAME``: the Triton backend passes; backends that break the
contract, or compute the wrong values, are reported and the command exits non-zero."""

from __future__ import annotations

import sys

import pytest

from tests.conformance.fake_backends import ENTRY_POINTS, MODULES
from tests.core.fake_dists import make_dist, source_for
from tilefuse import cli, config, plugin
from tilefuse.discovery import _installed_entry_points, reset_registry
from tilefuse.testing import run_conformance

pytest.importorskip("tilefuse_triton", reason="needs the Triton backend")


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """The fake backends installed next to the real ones (a fresh registry)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("acme_conformance_fakes", None)
    make_dist(tmp_path, "acme-conformance-fakes", ENTRY_POINTS, MODULES)
    fake = source_for(tmp_path)
    reset_registry(lambda group: [*_installed_entry_points(group), *fake(group)])
    yield
    reset_registry()
    sys.modules.pop("acme_conformance_fakes", None)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["conformance", *argv])
    return code, capsys.readouterr().out


def _failed(out: str) -> set[str]:
    return {line[8:].strip() for line in out.splitlines() if line.startswith("FAILED")}


def test_triton_passes_every_case(capsys):
    code, out = _run(capsys, "triton")
    last = out.strip().splitlines()[-1]
    assert code == 0, out
    assert last.endswith("passed, 0 failed"), out
    assert int(last.split()[0]) >= 90, out  # API checks and differential cases all ran


def test_broken_backend_is_reported_case_by_case(fakes, capsys):
    code, out = _run(capsys, "broken", "-k", "pointwise: x * y")
    assert code == 1
    assert {
        "descriptor: capabilities",
        "signature: KernelScheduling.can_fuse_vertical",
        "signature: KernelScheduling.codegen",
        "pointwise: x * y + relu(x)",
    } <= _failed(out), out
    assert "telepathy" in out
    assert "has signature (spec, options), but core calls it as (spec)" in out
    assert "TypeError: BrokenScheduling.codegen() missing 1 required positional" in out
    assert "signature: KernelScheduling.can_fuse_horizontal" not in _failed(out)
    assert out.strip().splitlines()[-1].endswith(f"{len(_failed(out))} failed"), out


def test_availability_that_raises_fails_and_stops_the_load(fakes, capsys):
    code, out = _run(capsys, "flaky", "-k", "pointwise: x * y")
    assert code == 1
    assert "availability: answers, never raises" in _failed(out)
    assert "RuntimeError: driver probe crashed" in out
    assert "load: returns a factory" not in _failed(out)  # skipped, not run


@pytest.mark.skipif(
    not config.triton_interpreted(), reason="the fake 'wrong' backend runs Triton on CPU tensors"
)
def test_wrong_values_fail_the_differential_cases_only(fakes):
    report = run_conformance("wrong", select="fused")
    failed = {r.name for r in report.failed}
    assert not [r for r in report.results if r.name.startswith(("descriptor", "signature"))
                and not r.passed], report.format()  # fmt: skip
    cases = [r for r in report.results if r.name.startswith("fused")]
    assert cases and failed == {r.name for r in cases}, report.format()
    assert all("differs from eager" in r.reason for r in cases), report.format()
    with pytest.raises(AssertionError, match="differs from eager"):
        report.assert_ok()


def test_unknown_backend_exits_2_naming_what_is_installed(capsys):
    code = cli.main(["conformance", "no-such-backend"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no backend named 'no-such-backend' is installed" in err
    assert "triton" in err


def test_a_device_the_backend_does_not_serve_exits_2(capsys):
    code = cli.main(["conformance", "triton", "--device", "mps"])
    assert code == 2
    assert "not 'mps'" in capsys.readouterr().err


def test_unusable_descriptor_fails_discovery_and_skips_the_rest(tmp_path, monkeypatch):
    source = MODULES["acme_conformance_fakes"] + "\nOLD = Flaky()\n"
    source += "OLD.info = plugin.BackendInfo('old', 1 - plugin.API_VERSION, ('cpu',), "
    source += "frozenset({'pointwise'}))\n"
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("acme_conformance_fakes", None)
    eps = {plugin.BACKENDS_GROUP: {"old": "acme_conformance_fakes:OLD"}}
    make_dist(tmp_path, "acme-old", eps, {"acme_conformance_fakes": source})
    reset_registry(source_for(tmp_path))
    try:
        report = run_conformance("old")
    finally:
        reset_registry()
        sys.modules.pop("acme_conformance_fakes", None)
    assert [r.name for r in report.failed] == ["descriptor: discovered"]
    assert "plugin API version" in report.failed[0].reason
    assert len(report.skipped) == len(report.results) - 1
